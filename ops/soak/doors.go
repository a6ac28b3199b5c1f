package soak

import (
	"context"
	"encoding/base64"
	"fmt"
	"strings"
)

// The Piston and Judge0 doors, as their clients use them: Piston's key
// in HTTP Basic credentials and no Content-Type (as piston-client sends
// its key and body), Judge0's in X-Auth-Token.

// doorLangs are the languages the soak sends through the two doors, by
// Piston's name and Judge0's id, with the soak's hello program.
var doorLangs = []struct {
	piston string
	judge0 int
	ours   string
}{
	{"python", 71, "python3"},
	{"javascript", 63, "javascript"},
	{"bash", 46, "bash"},
	{"c", 50, "c"},
}

func pistonHeaders(key string) map[string]string {
	return map[string]string{"X-API-Key": "", "Content-Type": "",
		"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("apikey:"+key))}
}

func judge0Headers(key string) map[string]string {
	return map[string]string{"X-API-Key": "", "X-Auth-Token": key}
}

// pistonExecute runs a hello program through POST /api/v2/execute, and
// now and then reads the runtimes.
func pistonExecute(ctx context.Context, w *worker, acct int) {
	l := doorLangs[w.rnd.IntN(len(doorLangs))]
	h := hellos[l.ours]
	kind := "piston execute " + l.piston
	a, ok := w.call(ctx, kind, "", "POST", "/api/v2/execute",
		jsonBody(map[string]any{"language": l.piston, "version": "*", "files": []any{map[string]any{"content": h.code}}}),
		pistonHeaders(w.key(acct)), 200)
	if !ok {
		return
	}
	run, _ := a.obj["run"].(map[string]any)
	if run == nil || run["stdout"] != h.want || run["code"] != 0.0 {
		w.fail(kind, "answer %s", snippet(a.body))
	}
	if w.rnd.IntN(4) == 0 {
		if a, ok := w.call(ctx, "piston runtimes", "", "GET", "/api/v2/runtimes", nil, pistonHeaders(w.key(acct)), 200); ok && len(a.arr) == 0 {
			w.fail("piston runtimes", "no runtimes: %s", snippet(a.body))
		}
	}
}

// judge0Status is a Judge0 submission's status id.
func judge0Status(m map[string]any) int {
	st, _ := m["status"].(map[string]any)
	id, _ := st["id"].(float64)
	return int(id)
}

// judge0Wait runs a hello program with wait=true, base64 both ways.
func judge0Wait(ctx context.Context, w *worker, acct int) {
	l := doorLangs[w.rnd.IntN(len(doorLangs))]
	h := hellos[l.ours]
	kind := fmt.Sprintf("judge0 wait %d", l.judge0)
	body := jsonBody(map[string]any{"language_id": l.judge0, "source_code": base64.StdEncoding.EncodeToString([]byte(h.code)),
		"expected_output": base64.StdEncoding.EncodeToString([]byte(h.want))})
	a, ok := w.call(ctx, kind, "", "POST", "/submissions?wait=true&base64_encoded=true", body, judge0Headers(w.key(acct)), 201)
	if ok && (judge0Status(a.obj) != 3 || a.str("stdout") != base64.StdEncoding.EncodeToString([]byte(h.want))) {
		w.fail(kind, "answer %s", snippet(a.body))
	}
}

// judge0Async submits without wait, with a callback when the soak takes
// them, and polls the token.
func judge0Async(ctx context.Context, w *worker, acct int) {
	kind := "judge0 async submit"
	body := map[string]any{"language_id": 71, "source_code": "print(6*7)"}
	if w.r.hooks != nil {
		body["callback_url"] = w.r.hooks.url(w.id)
	}
	a, ok := w.call(ctx, kind, "", "POST", "/submissions", jsonBody(body), judge0Headers(w.key(acct)), 201)
	if !ok {
		return
	}
	token := a.str("token")
	if token == "" {
		w.fail(kind, "answer %s", snippet(a.body))
		return
	}
	if w.r.hooks != nil {
		w.r.mu.Lock()
		w.r.tokens = append(w.r.tokens, token)
		w.r.mu.Unlock()
	}
	m := w.poll(ctx, "judge0 async poll", w.key(acct), "/submissions/"+token, func(m *answer) bool { return judge0Status(m.obj) > 2 })
	if m != nil && (judge0Status(m.obj) != 3 || m.str("stdout") != "42\n") {
		w.fail("judge0 async poll", "submission %s: %s", token, snippet(m.body))
	}
}

// judge0Batch submits three submissions, one refused, as one batch and
// polls the two accepted together.
func judge0Batch(ctx context.Context, w *worker, acct int) {
	kind := "judge0 batch"
	body := jsonBody(map[string]any{"submissions": []any{
		map[string]any{"language_id": 71, "source_code": "print(1)"},
		map[string]any{"language_id": 9999, "source_code": "x"},
		map[string]any{"language_id": 46, "source_code": "echo 2", "expected_output": "3"},
	}})
	a, ok := w.call(ctx, kind, "", "POST", "/submissions/batch", body, judge0Headers(w.key(acct)), 201)
	if !ok {
		return
	}
	items := a.list()
	if len(items) != 3 || items[0]["token"] == nil || items[1]["language_id"] == nil || items[2]["token"] == nil {
		w.fail(kind, "answer %s", snippet(a.body))
		return
	}
	tokens := fmt.Sprintf("%s,%s", items[0]["token"], items[2]["token"])
	m := w.poll(ctx, "judge0 batch poll", w.key(acct), "/submissions/batch?tokens="+tokens, func(m *answer) bool {
		subs, _ := m.obj["submissions"].([]any)
		for _, s := range subs {
			if sm, _ := s.(map[string]any); judge0Status(sm) <= 2 {
				return false
			}
		}
		return len(subs) == 2
	})
	if m == nil {
		return
	}
	subs, _ := m.obj["submissions"].([]any)
	first, _ := subs[0].(map[string]any)
	second, _ := subs[1].(map[string]any)
	if judge0Status(first) != 3 || first["stdout"] != "1\n" || judge0Status(second) != 4 || !strings.HasPrefix(fmt.Sprint(second["stdout"]), "2") {
		w.fail("judge0 batch poll", "results %s", snippet(m.body))
	}
}
