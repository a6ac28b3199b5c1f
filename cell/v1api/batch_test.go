package v1api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

func TestParseBatch(t *testing.T) {
	items := func(n int) string {
		parts := make([]string, n)
		for i := range parts {
			parts[i] = `{"language":"bash","code":"echo"}`
		}
		return "[" + strings.Join(parts, ",") + "]"
	}
	tests := []struct {
		name, plan, body string
		n                int
		code             apierror.Code
	}{
		{"executions", "basic", `{"executions":` + items(3) + `}`, 3, ""},
		{"submissions", "basic", `{"submissions":` + items(2) + `}`, 2, ""},
		{"at the cap", "basic", `{"executions":` + items(10) + `}`, 10, ""},
		{"over basic's 10", "basic", `{"executions":` + items(11) + `}`, 0, apierror.BatchTooLarge},
		{"pro allows 50", "pro", `{"executions":` + items(50) + `}`, 50, ""},
		{"over pro's 50", "pro", `{"executions":` + items(51) + `}`, 0, apierror.BatchTooLarge},
		{"empty", "basic", `{"executions":[]}`, 0, apierror.EmptyBatch},
		{"missing", "basic", `{}`, 0, apierror.MissingField},
		{"both", "basic", `{"executions":` + items(1) + `,"submissions":` + items(1) + `}`, 0, apierror.InvalidField},
		{"not an array", "basic", `{"executions":{"language":"bash"}}`, 0, apierror.InvalidField},
		{"not an object", "basic", items(2), 0, apierror.InvalidJSON},
		{"malformed", "basic", `{"executions":[`, 0, apierror.InvalidJSON},
		{"bad items pass the envelope", "basic", `{"executions":[1,"x",null]}`, 3, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := (Dialect{}).BatchItems([]byte(tc.body), execreqtest.Plan(t, tc.plan))
			if tc.code != "" {
				execreqtest.WantError(t, err, http.StatusBadRequest, tc.code)
				if tc.code == apierror.BatchTooLarge {
					if e, _ := apierror.As(err); !strings.Contains(e.Message, fmt.Sprint(execreqtest.Plan(t, tc.plan).BatchSize)) {
						t.Errorf("message %q does not name the cap", e.Message)
					}
				}
				return
			}
			if err != nil || len(got) != tc.n {
				t.Fatalf("%d items, %v", len(got), err)
			}
		})
	}
}
