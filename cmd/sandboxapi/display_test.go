package main_test

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"net/http"
	"strings"
	"testing"
)

// TestSessionDisplayEndToEnd: "display": true through the gateway, every
// request and response held to the OpenAPI document: a value, a plot
// whose PNG decodes, an exception after printed output, and the
// refusal where the interpreter cannot run cells.
func TestSessionDisplayEndToEnd(t *testing.T) {
	s := startDevArgs(t, t.TempDir(), nil)
	id := s.openSession(s.key, map[string]any{"language": "python3"})
	cell := func(code string) map[string]any {
		t.Helper()
		status, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+id+"/execute", map[string]any{"code": code, "display": true, "timeout": 30, "wall_time_limit": 30})
		if status != http.StatusOK {
			t.Fatalf("%q: HTTP %d %v", code, status, m)
		}
		return m
	}
	outputs := func(m map[string]any) []map[string]any {
		var out []map[string]any
		list, _ := m["outputs"].([]any)
		for _, o := range list {
			om, _ := o.(map[string]any)
			out = append(out, om)
		}
		return out
	}
	data := func(o map[string]any, mime string) string {
		d, _ := o["data"].(map[string]any)
		v, _ := d[mime].(string)
		return v
	}

	m := cell("x = 21\nx * 2")
	if o := outputs(m); m["status"] != "completed" || len(o) != 1 || o[0]["main"] != true || data(o[0], "text/plain") != "42" || m["exception"] != nil {
		t.Fatalf("x * 2: %v", m)
	}
	m = cell("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
	var img []byte
	for _, o := range outputs(m) {
		if p := data(o, "image/png"); p != "" && o["main"] == false {
			img, _ = base64.StdEncoding.DecodeString(p)
		}
	}
	if _, err := png.Decode(bytes.NewReader(img)); err != nil || m["stderr"] != "" {
		t.Fatalf("plot: %v, %d bytes of PNG: %v", err, len(img), m)
	}
	m = cell("print('before')\n1/0")
	e, _ := m["exception"].(map[string]any)
	if m["status"] != "runtime_error" || m["stdout"] != "before\n" || m["stderr"] != "" || e["name"] != "ZeroDivisionError" || !strings.Contains(e["traceback"].(string), "line 2") {
		t.Fatalf("1/0: %v", m)
	}
	if list, ok := m["outputs"].([]any); !ok || len(list) != 0 {
		t.Fatalf("1/0: outputs %v, want an empty list", m["outputs"])
	}
	// Without display the same session answers as it always has.
	if m := s.run(s.key, id, "print(x)"); m["stdout"] != "21\n" || m["outputs"] != nil || m["exception"] != nil {
		t.Fatalf("without display: %v", m)
	}
	sh := s.openSession(s.key, map[string]any{"language": "bash"})
	status, m, _ := s.sessionCall(s.key, "POST", "/v1/sessions/"+sh+"/execute", map[string]any{"code": "echo", "display": true})
	assertError(t, status, m, http.StatusBadRequest)
	if errorCode(m) != "unsupported_in_session" {
		t.Fatalf("display in bash: %v", m)
	}
}
