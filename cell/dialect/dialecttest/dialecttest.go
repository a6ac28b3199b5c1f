// Package dialecttest serves dialects in tests the way a node does,
// through package dialect's Doors, without a job service or a gateway.
package dialecttest

import (
	"net/http"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/dialect"
)

// NoJobs stands in for the job service of tests that do not call the
// async and job routes: those answer 418.
type NoJobs struct{}

// JobHandler answers 418 I'm a teapot.
func (NoJobs) JobHandler(dialect.Dialect, dialect.Route) (api.CallerHandler, error) {
	return func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller) {
		w.WriteHeader(http.StatusTeapot)
	}, nil
}

// Routes are the doors' routes with their handlers; without a job
// service, NoJobs serves the async and job routes.
func Routes(t testing.TB, doors *dialect.Doors) []api.Route {
	t.Helper()
	if doors.Jobs == nil {
		doors.Jobs = NoJobs{}
	}
	routes, err := doors.Routes()
	if err != nil {
		t.Fatal(err)
	}
	return routes
}

// Handler serves routes, every request for caller, as the node's API
// serves them once the gateway's signature checks out.
func Handler(routes []api.Route, caller callerauth.Caller) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.HandleFunc(rt.Pattern, func(w http.ResponseWriter, r *http.Request) { rt.Handle(w, r, caller) })
	}
	return mux
}
