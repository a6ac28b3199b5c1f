package unsandbox

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

// FuzzParseUnsandbox: the bodies of POST /execute (JSON) and POST /run
// (code, options in the query). Each is refused with a 4xx
// *apierror.Error, or accepted within the dialect's documented limits: at
// most 10 input files of 5 MB, 10 MB in all, each a single name the
// sandbox can create and not the source file; env names and values an
// environment can carry; a ttl of 1 to 900 seconds within the plan.
func FuzzParseUnsandbox(f *testing.F) {
	cat := execreqtest.BuiltinCatalog(f)
	for _, body := range []string{
		`{"language":"python","code":"print(1)"}`,
		`{"language":"node","code":"x","env":{"A":"1","B_2":""},"ttl":20,"network_mode":"zerotrust"}`,
		`{"language":"python","code":"x","input_files":[{"filename":"data.csv","content":"YSxiCg=="},{"content":"eA"}]}`,
		`{"language":"python","code":"x","input_files":[{"filename":"` + strings.Repeat("f", 256) + `","content":""}]}`,
		`{"language":"python","code":"x","input_files":[{"filename":"` + strings.Repeat("é", 128) + `","content":""}]}`,
		`{"language":"python","code":"x","input_files":[{"filename":"main.py","content":""}]}`,
		`{"language":"python","code":"x","input_files":[{"filename":"a/b","content":""},{"filename":"..","content":""}]}`,
		`{"language":"python","code":"x","input_files":[{"filename":"1","content":""},{"content":""}]}`,
		`{"language":"python","code":"x","env":{"1A":"x","A=B":"y","C":"a\u0000b"}}`,
		`{"language":"rust","code":"x","return_wasm_artifact":true,"return_artifact":true}`,
		`{"language":"python","code":"x","network_mode":"semitrusted","ttl":901}`,
		`{"language":"python"}`, `{"code":"x"}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(body), "", false, uint8(0))
	}
	for _, run := range []struct{ code, query string }{
		{"#!/usr/bin/env python3\nprint(1)", "ttl=5&env=%7B%22N%22%3A%222%22%7D"},
		{"#!/bin/bash\necho", "network_mode=zerotrust&return_artifact=true"},
		{"\xef\xbb\xbf#!/usr/bin/env -S node --flag\n", "ttl=x"},
		{"print(1)", ""},
		{"#!/usr/bin/env cobol\n", "env=nope"},
		{"#!\xff\n", "return_wasm_artifact=1"},
	} {
		f.Add([]byte(run.code), run.query, true, uint8(3))
	}
	plansByIndex := []string{"basic", "pro", "ultra", "mega"}
	f.Fuzz(func(t *testing.T, body []byte, rawQuery string, run bool, planIndex uint8) {
		plan := execreqtest.Plan(t, plansByIndex[int(planIndex)%len(plansByIndex)])
		query, _ := url.ParseQuery(rawQuery)
		in := dialect.Input{Body: body, Query: query, Plan: plan, Catalog: cat}
		var d dialect.Dialect = Execute{}
		if run {
			d = Run{}
		}
		req, err := d.Parse(in)
		if err != nil {
			execreqtest.Refusal(t, err)
			return
		}
		ex := req.Exec
		if ex.Language == nil || len(ex.Code) > 1<<20 {
			t.Fatalf("language %v, %d bytes of code", ex.Language, len(ex.Code))
		}
		if run && (!utf8.ValidString(ex.Code) || !strings.HasPrefix(strings.TrimPrefix(ex.Code, "\xef\xbb\xbf"), "#!")) {
			t.Fatalf("/run accepted code without a shebang line: %.40q", ex.Code)
		}
		if ex.Limits.CPU != ex.Limits.Wall || ex.Limits.CPU < time.Second || ex.Limits.CPU > min(900*time.Second, plan.MaxTimeout()) {
			t.Fatalf("ttl %v / %v on a plan capped at %v", ex.Limits.CPU, ex.Limits.Wall, plan.MaxTimeout())
		}
		envBytes := 0
		for k, v := range ex.Env {
			if !envName.MatchString(k) || len(k) > 128 || len(v) > 32<<10 || strings.IndexByte(v, 0) >= 0 {
				t.Fatalf("accepted env %q=%.40q", k, v)
			}
			envBytes += len(k) + 1 + len(v)
		}
		if len(ex.Env) > 100 || envBytes > 128<<10 {
			t.Fatalf("accepted %d env variables, %d bytes", len(ex.Env), envBytes)
		}
		if len(ex.Files) > 10 {
			t.Fatalf("accepted %d input files", len(ex.Files))
		}
		for _, f := range ex.Files {
			if len(f.Content) > 5<<20 || strings.Contains(f.Path, "/") {
				t.Fatalf("accepted input file %q of %d bytes", f.Path, len(f.Content))
			}
		}
		execreqtest.CheckFiles(t, ex.Files, ex.Language.SourceFile)
	})
}

// FuzzDetectLanguage: the shebang line of POST /run. Detection never
// panics, refuses with a 400, reads the first line only (what follows it
// cannot change the answer) and gives the same answer every time.
func FuzzDetectLanguage(f *testing.F) {
	cat := execreqtest.BuiltinCatalog(f)
	for _, s := range []string{
		"#!/usr/bin/env python3\nprint(1)", "#!/bin/bash", "#!/usr/bin/env -S node --flag\n", "#!/usr/bin/ruby3.3\n",
		"#!/usr/bin/env -u HOME A=1 python3.12\n", "#!/usr/bin/env -u\n", "#! /usr/bin/php -q\n", "#!env\n",
		"\xef\xbb\xbf#!/bin/sh\n", "#!/usr/bin/env cobol\n", "#!\n", "#!", "print(1)", "", "#!/x/node22\r\n",
		"#!python\x00\n", "#!/usr/local/bin/ts-node\n", "#!/usr/bin/env dotnet-script\n", "#!\xff\xfe\n",
	} {
		f.Add([]byte(s), []byte("\nrest of the program"))
	}
	f.Fuzz(func(t *testing.T, code, tail []byte) {
		lang, err := DetectLanguage(code, cat)
		again, err2 := DetectLanguage(code, cat)
		if lang != again || (err == nil) != (err2 == nil) {
			t.Fatalf("detection of %q is not stable: %v %v, then %v %v", code, lang, err, again, err2)
		}
		if err != nil {
			e := execreqtest.Refusal(t, err)
			if e.Code != apierror.LanguageNotDetected && e.Code != apierror.UnsupportedLanguage {
				t.Fatalf("refusal %s", e.Code)
			}
		} else if !bytes.HasPrefix(bytes.TrimPrefix(code, []byte("\xef\xbb\xbf")), []byte("#!")) {
			t.Fatalf("detected %s in %q, which has no shebang", lang.ID, code)
		}
		// Only the first line counts: replace what follows it.
		first, _, cut := bytes.Cut(code, []byte("\n"))
		if !cut {
			return
		}
		other, err3 := DetectLanguage(append(append(append([]byte{}, first...), '\n'), tail...), cat)
		if other != lang || (err == nil) != (err3 == nil) {
			t.Fatalf("the lines after the shebang changed the answer: %v %v, then %v %v", lang, err, other, err3)
		}
	})
}
