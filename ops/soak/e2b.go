package soak

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
)

// The E2B door, as E2B's SDK drives it: the control API with the key in
// X-API-KEY, then the sandbox's envd with its access token (the SDK
// sends no key there): a file upload, a command streamed over Connect
// while another runs in the background, a code-interpreter cell, and the
// kill.

// e2bEnvdHeaders are the headers of an envd request for sandbox id.
func e2bEnvdHeaders(id, token string, extra map[string]string) map[string]string {
	h := map[string]string{"X-API-Key": "", "E2b-Sandbox-Id": id, "E2b-Sandbox-Port": "49983", "X-Access-Token": token}
	for k, v := range extra {
		h[k] = v
	}
	return h
}

// connectFrame is one Connect streaming envelope holding msg as JSON.
func connectFrame(msg any) []byte {
	b, _ := json.Marshal(msg)
	frame := make([]byte, 5, 5+len(b))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(b)))
	return append(frame, b...)
}

// ProcessStream is what an envd Process.Start stream said (Connect's
// streaming JSON): the command's output, its end, or the stream's error.
type ProcessStream struct {
	Stdout, Stderr string
	ExitCode       int
	Ended          bool
	Err            string // the end-of-stream error, "code: message"
}

// ReadProcessStream reads a Process.Start response's envelopes.
func ReadProcessStream(body []byte) ProcessStream {
	var res ProcessStream
	for len(body) >= 5 {
		flags, n := body[0], int(binary.BigEndian.Uint32(body[1:5]))
		if len(body) < 5+n {
			break
		}
		msg := body[5 : 5+n]
		body = body[5+n:]
		if flags&2 != 0 {
			var end struct {
				Error *struct{ Code, Message string } `json:"error"`
			}
			if json.Unmarshal(msg, &end) == nil && end.Error != nil {
				res.Err = end.Error.Code + ": " + end.Error.Message
			}
			continue
		}
		var ev struct {
			Event struct {
				Data *struct{ Stdout, Stderr []byte } `json:"data"`
				End  *struct {
					ExitCode int `json:"exitCode"`
				} `json:"end"`
			} `json:"event"`
		}
		if json.Unmarshal(msg, &ev) != nil {
			res.Err = "an event that is not JSON: " + string(msg)
			return res
		}
		if d := ev.Event.Data; d != nil {
			res.Stdout += string(d.Stdout)
			res.Stderr += string(d.Stderr)
		}
		if e := ev.Event.End; e != nil {
			res.ExitCode, res.Ended = e.ExitCode, true
		}
	}
	return res
}

// e2bRun runs cmd as commands.run does, over Connect's streaming JSON.
func e2bRun(ctx context.Context, w *worker, kind, id, token, cmd string) (ProcessStream, bool) {
	body := connectFrame(map[string]any{"process": map[string]any{"cmd": "/bin/bash", "args": []string{"-l", "-c", cmd}}, "stdin": false})
	a, ok := w.call(ctx, kind, "", "POST", "/e2b/sandbox/process.Process/Start", body,
		e2bEnvdHeaders(id, token, map[string]string{"Content-Type": "application/connect+json", "Connect-Protocol-Version": "1", "Connect-Timeout-Ms": "30000"}), 200)
	if !ok {
		return ProcessStream{}, false
	}
	r := ReadProcessStream(a.body)
	if !r.Ended || r.Err != "" {
		w.fail(kind, "stream: %+v", r)
		return r, false
	}
	return r, true
}

// e2bSandbox is one E2B sandbox's life.
func e2bSandbox(ctx context.Context, w *worker, acct int) {
	key := w.key(acct)
	a, ok := w.call(ctx, "e2b create", key, "POST", "/e2b/v2/sandboxes", jsonBody(map[string]any{"templateID": "base", "timeout": 120}), nil, 201)
	if !ok {
		return
	}
	id, token := a.str("sandboxID"), a.str("envdAccessToken")
	if !strings.HasPrefix(id, "sess_") || token == "" {
		w.fail("e2b create", "answer %s", snippet(a.body))
		return
	}
	defer w.call(context.WithoutCancel(ctx), "e2b kill", key, "DELETE", "/e2b/sandboxes/"+id, nil, nil, 204)
	want := "soak " + strconv.Itoa(w.id) + "\n"
	if _, ok := w.call(ctx, "e2b upload", "", "POST", "/e2b/sandbox/files?path=soak.txt", []byte(want),
		e2bEnvdHeaders(id, token, map[string]string{"Content-Type": "application/octet-stream"}), 200); !ok {
		return
	}
	// A background command runs beside the next one.
	var bg ProcessStream
	var bgOK bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bg, bgOK = e2bRun(ctx, w, "e2b background command", id, token, "sleep 1; echo background")
	}()
	if r, ok := e2bRun(ctx, w, "e2b command", id, token, "cat soak.txt"); ok && (r.Stdout != want || r.ExitCode != 0) {
		w.fail("e2b command", "stdout %q exit %d, want %q", r.Stdout, r.ExitCode, want)
	}
	wg.Wait()
	if bgOK && (bg.Stdout != "background\n" || bg.ExitCode != 0) {
		w.fail("e2b background command", "stdout %q exit %d", bg.Stdout, bg.ExitCode)
	}
	a, ok = w.call(ctx, "e2b runCode", "", "POST", "/e2b/sandbox/execute", jsonBody(map[string]any{"code": "x = 6 * 7\nx"}),
		e2bEnvdHeaders(id, token, map[string]string{"Content-Type": "application/json"}), 200)
	if ok && !bytes.Contains(a.body, []byte(`"text":"42"`)) {
		w.fail("e2b runCode", "answer %s", snippet(a.body))
	}
}
