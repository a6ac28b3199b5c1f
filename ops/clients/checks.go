package clients

import (
	"encoding/json"
	"strings"
	"testing"
)

// Checks runs s, a script that reports its checks as JSON lines, and makes
// each check a subtest of t. The script prints {"plan": [names]} first,
// then one {"check": name, "error": "...", "detail": {...}, "ms": n} per
// check as it ends, with error only when the check failed and detail
// whatever the check measured (logged). A check of the plan that never
// reports fails: the script stopped before it.
func Checks(t *testing.T, s Script) {
	t.Helper()
	r := Run(t, s)
	type line struct {
		Plan   []string        `json:"plan"`
		Check  string          `json:"check"`
		Error  string          `json:"error"`
		Detail json.RawMessage `json:"detail"`
		MS     int             `json:"ms"`
	}
	var plan []string
	reported := map[string]line{}
	for _, text := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		var l line
		if err := json.Unmarshal([]byte(text), &l); err != nil {
			t.Errorf("clients: the script printed %q: %v", text, err)
			continue
		}
		if l.Plan != nil {
			plan = l.Plan
			continue
		}
		reported[l.Check] = l
	}
	if r.Err != nil || len(plan) == 0 {
		t.Fatalf("clients: the script failed: %v\nstdout:\n%s\nstderr:\n%s", r.Err, r.Stdout, r.Stderr)
	}
	for _, name := range plan {
		t.Run(name, func(t *testing.T) {
			l, ok := reported[name]
			switch {
			case !ok:
				t.Fatalf("never reported (the script stopped before it)\nstderr:\n%s", r.Stderr)
			case l.Error != "":
				t.Fatal(l.Error)
			}
			if len(l.Detail) > 0 {
				t.Logf("%s in %d ms", l.Detail, l.MS)
			}
		})
	}
}
