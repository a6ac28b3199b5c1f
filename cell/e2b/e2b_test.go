package e2b

import (
	"io/fs"
	"net/http"
	"testing"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/filesystem"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

func TestDecodeCreate(t *testing.T) {
	tests := []struct {
		name, body, template string
		code                 apierror.Code
	}{
		{name: "empty body: the default template", body: ``, template: "base"},
		{name: "the SDK's create", body: `{"templateID":"base","timeout":300,"allow_internet_access":true,"mcp":null,"network":null}`, template: "base"},
		{name: "the code interpreter's", body: `{"templateID":"code-interpreter-v1"}`, template: "code-interpreter-v1"},
		{name: "its alias", body: `{"templateID":"code-interpreter"}`, template: "code-interpreter"},
		{name: "a custom template", body: `{"templateID":"my-env"}`, code: apierror.TemplateUnavailable},
		{name: "negative timeout", body: `{"timeout":-5}`, code: apierror.InvalidField},
		{name: "autoPause", body: `{"autoPause":true}`, code: apierror.UnsupportedByDoor},
		{name: "autoPause false is fine", body: `{"autoPause":false}`, template: "base"},
		{name: "volume mounts", body: `{"volumeMounts":[{"name":"v","path":"/d"}]}`, code: apierror.UnsupportedByDoor},
		{name: "network rules", body: `{"network":{"denyOut":["0.0.0.0/0"]}}`, code: apierror.UnsupportedByDoor},
		{name: "a variable with =", body: `{"envVars":{"A=B":"c"}}`, code: apierror.InvalidField},
		{name: "an empty metadata key", body: `{"metadata":{"":"v"}}`, code: apierror.InvalidField},
		{name: "wrong type", body: `{"timeout":"soon"}`, code: apierror.InvalidField},
		{name: "not JSON", body: `{`, code: apierror.InvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := DecodeCreate([]byte(tt.body))
			switch {
			case tt.code != "" && !apierror.Is(err, tt.code):
				t.Fatalf("err %v, want %s", err, tt.code)
			case tt.code == "" && err != nil:
				t.Fatal(err)
			case tt.code == "" && req.TemplateID != tt.template:
				t.Errorf("template %q, want %q", req.TemplateID, tt.template)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"a.txt", "/work/a.txt"}, {"~", "/work"}, {"~/x/../y", "/work/y"}, {"/tmp//z/", "/tmp/z"}, {"../../etc", "/etc"}, {"", "/work"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			if got, err := resolve(tt.in); err != nil || got != tt.want {
				t.Errorf("resolve(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
	if _, err := resolve("a\x00b"); !apierror.Is(err, apierror.InvalidField) {
		t.Errorf("a NUL in a path: %v", err)
	}
}

func TestCheckUser(t *testing.T) {
	for _, tt := range []struct {
		user string
		ok   bool
	}{{"", true}, {"user", true}, {"root", false}, {"admin", false}} {
		if err := checkUser(tt.user); (err == nil) != tt.ok {
			t.Errorf("checkUser(%q) = %v", tt.user, err)
		}
	}
	h := http.Header{"Authorization": {"Basic cm9vdDo="}} // root:
	if got := basicUser(h); got != "root" {
		t.Errorf("basicUser = %q, want root", got)
	}
}

func TestEndEvent(t *testing.T) {
	tests := []struct {
		name     string
		res      executor.Result
		exit     int32
		status   string
		hasError bool
	}{
		{"exit 0", executor.Result{End: executor.EndExited}, 0, "exit status 0", false},
		{"exit 3", executor.Result{End: executor.EndExited, ExitCode: 3}, 3, "exit status 3", false},
		{"killed", executor.Result{End: executor.EndExited, Signal: 9}, -1, "signal: killed", false},
		{"wall limit", executor.Result{End: executor.EndWallLimit, Signal: 9, Message: "10 s"}, -1, "signal: killed", true},
		{"output cap", executor.Result{End: executor.EndOutputLimit}, -1, "exit status 0", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := endEvent(&tt.res)
			if e.ExitCode != tt.exit || e.Status != tt.status || (e.Error != nil) != tt.hasError || e.Exited != (tt.res.Signal == 0) {
				t.Errorf("endEvent = %+v", e)
			}
		})
	}
}

func TestParseEntries(t *testing.T) {
	out := "f\x008\x00644\x00-rw-r--r--\x00user\x00user\x001700000000.5\x00\x00/work/a.txt\x00" +
		"d\x004096\x00755\x00drwxr-xr-x\x00user\x00user\x001700000001\x00\x00/work/d\x00" +
		"l\x005\x00777\x00lrwxrwxrwx\x00user\x00user\x001700000002\x00/work/a.txt\x00/work/l\x00"
	entries, err := parseEntries([]byte(out))
	if err != nil || len(entries) != 3 {
		t.Fatalf("parseEntries = %v, %v", entries, err)
	}
	if e := entries[0]; e.Name != "a.txt" || e.Type != filesystem.FileType_FILE_TYPE_FILE || e.Size != 8 || e.Mode != 0o644 || e.ModifiedTime.AsTime().UnixMilli() != 1700000000500 {
		t.Errorf("file: %+v", e)
	}
	if e := entries[1]; e.Type != filesystem.FileType_FILE_TYPE_DIRECTORY || fs.FileMode(e.Mode) != fs.ModeDir|0o755 || e.Permissions != "drwxr-xr-x" {
		t.Errorf("directory: %+v", e)
	}
	if e := entries[2]; e.Type != filesystem.FileType_FILE_TYPE_SYMLINK || e.GetSymlinkTarget() != "/work/a.txt" {
		t.Errorf("symlink: %+v", e)
	}
	if _, err := parseEntries([]byte("f\x001\x00")); err == nil {
		t.Error("a partial entry was parsed")
	}
}

func TestEnvdErrorBody(t *testing.T) {
	for _, tt := range []struct {
		code   apierror.Code
		status int
	}{{apierror.SessionNotFound, 502}, {apierror.SessionLost, 502}, {apierror.InvalidField, 400}, {apierror.Unavailable, 503}} {
		status, body := envdErrorBody(apierror.New(tt.code, "x"))
		if b := body.(ErrorBody); status != tt.status || b.Code != tt.status || b.Error != tt.code {
			t.Errorf("%s: %d %+v, want %d", tt.code, status, body, tt.status)
		}
	}
}

func TestInternet(t *testing.T) {
	yes, no := true, false
	egress := plans.Plan{Name: "pro", NodeEgress: true, NodeNetworkAllow: []string{"*"}}
	tests := []struct {
		name  string
		asked *bool
		plan  plans.Plan
		net   bool
	}{
		{"the SDK's default on a plan with egress", &yes, egress, true},
		{"unsaid, on a plan with egress", nil, egress, true},
		{"asked for none", &no, egress, false},
		{"a node without an egress proxy", &yes, plans.Plan{Name: "pro", NodeNetworkAllow: []string{"*"}}, false},
		{"a plan without network", &yes, plans.Plan{Name: "basic", NodeEgress: true}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol, err := internet(tt.asked, tt.plan)
			if err != nil || (pol != nil) != tt.net {
				t.Errorf("internet = %+v, %v; want a network: %v", pol, err, tt.net)
			}
		})
	}
}
