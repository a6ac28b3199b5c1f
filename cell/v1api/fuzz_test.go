package v1api

import (
	"io/fs"
	"net/url"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// FuzzParseV1: the body of POST /v1/execute (and of a batch item, an async
// submission, a session execute). Whatever the body, the parser refuses it
// with a 4xx *apierror.Error, or accepts a request inside the documented
// limits: files the sandbox can write, none over the source file when
// code is given, scripts of at most 4 KB, no NUL where argv or a file
// name would carry it, limits within the plan, a callback only when async.
func FuzzParseV1(f *testing.F) {
	cat := execreqtest.BuiltinCatalog(f)
	zip := func(entries ...execreqtest.ZipEntry) string { return execreqtest.Zip(f, entries...) }
	for _, body := range []string{
		`{"language":"python3","code":"print(1)"}`,
		`{"language":"c","code":"int main(){}","compiler_options":"-O2 -Wall","command_line_arguments":"a 'b c'","stdin":"x","timeout":2,"wall_time_limit":3.5}`,
		`{"language":"bash","code":"x","base64_encoded":true,"stdin":"aGk=","expected_output":"aGkK"}`,
		`{"language":"bash","additional_files":"` + zip(execreqtest.ZipEntry{Name: "main.sh", Body: []byte("echo")}) + `"}`,
		`{"language":"python3","code":"x","additional_files":"` + zip(execreqtest.ZipEntry{Name: "main.py/x"}) + `"}`,
		`{"language":"python3","code":"x","additional_files":"` + zip(execreqtest.ZipEntry{Name: "main.py/", Mode: fs.ModeDir | 0o755}) + `"}`,
		`{"language":"java","code":"x","additional_files":"` + zip(execreqtest.ZipEntry{Name: "lib/Util.java"}, execreqtest.ZipEntry{Name: "Main.java"}) + `"}`,
		`{"language":"rust","code":"x","additional_files":"` + zip(execreqtest.ZipEntry{Name: strings.Repeat("r", 256)}) + `"}`,
		`{"language":"go","additional_files":"` + zip(execreqtest.ZipEntry{Name: "a\xffb"}) + `"}`,
		`{"language":"cpp","code":"x","compile_script":"g++ main.cpp","run_script":"./a.out","redirect_stderr_to_stdout":true}`,
		`{"language":"bash","code":"x","callback_url":"https://example.com/hook"}`,
		`{"language":"bash","code":"x","callback_url":"ftp://x"}`,
		`{"language":"bash","code":"x","timeout":1e300}`,
		`{"language":"bash","code":"x","timeout":-1,"wall_time_limit":0}`,
		`{"language":"bash","code":"x","command_line_arguments":"a\u0000b"}`,
		`{"language":"bash","code":"x","run_script":"a\u0000"}`,
		`{"language":"typescript","code":"x","compiler_options":"--strict --target es2020"}`,
		`{"language":"php","code":null,"additional_files":""}`,
		`{"language":"cobol","code":"x"}`,
		`{"language":1}`, `[]`, `"x"`, `{`, `{"language":"bash","code":"x"} {}`, ``,
	} {
		f.Add([]byte(body), uint8(0), true)
	}
	f.Add([]byte(`{"language":"bash","code":"x","timeout":600}`), uint8(3), false)
	plansByIndex := []string{"basic", "pro", "ultra", "mega"}
	f.Fuzz(func(t *testing.T, body []byte, planIndex uint8, async bool) {
		plan := execreqtest.Plan(t, plansByIndex[int(planIndex)%len(plansByIndex)])
		req, err := (Dialect{}).Parse(dialect.Input{Body: body, Plan: plan, Catalog: cat, Async: async})
		if err != nil {
			execreqtest.Refusal(t, err)
			return
		}
		ex := req.Exec
		if ex.Language == nil || req.LanguageName != ex.Language.ID {
			t.Fatalf("language %v, name %q", ex.Language, req.LanguageName)
		}
		if len(ex.Code) > 1<<20 {
			t.Fatalf("accepted %d bytes of code", len(ex.Code))
		}
		for name, s := range map[string]string{"compile_script": ex.CompileScript, "run_script": ex.RunScript} {
			if len(s) > 4<<10 || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("accepted a %s of %d bytes, or with NUL", name, len(s))
			}
		}
		for _, w := range append(append([]string{}, ex.Args...), ex.CompilerOptions...) {
			if strings.IndexByte(w, 0) >= 0 {
				t.Fatalf("accepted the argument %q", w)
			}
		}
		max := plan.MaxTimeout()
		if ex.Limits.CPU <= 0 || ex.Limits.Wall <= 0 || ex.Limits.CPU > max || ex.Limits.Wall > max {
			t.Fatalf("limits %v CPU, %v wall on a plan capped at %v", ex.Limits.CPU, ex.Limits.Wall, max)
		}
		var taken []string
		if ex.Code != "" {
			taken = append(taken, ex.Language.SourceFile)
		}
		execreqtest.CheckFiles(t, ex.Files, taken...)
		if req.CallbackURL != "" {
			u, err := url.Parse(req.CallbackURL)
			if !async || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("accepted callback_url %q (async %v)", req.CallbackURL, async)
			}
		}
	})
}
