// Package e2b is the door of E2B's sandboxes (docs/e2b.md): E2B's
// control API and each sandbox's envd (REST and Connect RPC), served as
// E2B serves them, so that E2B's SDKs (npm e2b, @e2b/code-interpreter)
// work against SandboxAPI by setting E2B_API_URL and E2B_SANDBOX_URL.
// An E2B sandbox is one of our sessions (cell/sessions), opened through
// the Manager's door seam: the same cap, records, expiry and routing.
// See DESIGN.md.
package e2b

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/filesystem/filesystemconnect"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/process/processconnect"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// Where the door is: E2B_API_URL is the gateway's URL and APIPrefix,
// E2B_SANDBOX_URL the gateway's URL and SandboxPrefix.
const (
	APIPrefix     = "/e2b"
	SandboxPrefix = "/e2b/sandbox"
)

// Door is the name the door's sessions carry (store.Session.Door).
const Door = "e2b"

// EnvdVersion is the envd version the door says its sandboxes run. The
// SDK gates features on it (its envd/versions.ts): 0.4.0 and later
// sends no "user" by default, so commands run as the sandbox's one user;
// 0.5.2 lets it call CloseStdin; 0.5.7 lets it upload files as
// application/octet-stream. 0.6.2's file metadata is not served, so
// the version stays below it and the SDK refuses metadata itself.
const EnvdVersion = "0.5.7"

// Templates the door serves: E2B's default and the code interpreter's.
// Both are the same python3 session sandbox.
var templates = map[string]string{"base": "base", "code-interpreter-v1": "code-interpreter-v1", "code-interpreter": "code-interpreter-v1"}

// DefaultTemplate is the template of a create that names none.
const DefaultTemplate = "base"

// Language is our language of an E2B sandbox: a python3 session, so the
// code interpreter's runCode has its REPL.
const Language = "python3"

// DefaultTimeout is E2B's sandbox lifetime when create names none.
const DefaultTimeout = 300 * time.Second

// The sandbox's user, and its home, where relative paths start: a
// session's work dir, which persists for the sandbox's life.
const (
	User = "user"
	Home = "/work"
)

// Sessions is what the door needs of the node's sessions;
// *sessions.Manager is one.
type Sessions interface {
	OpenDoor(ctx context.Context, c callerauth.Caller, opt sessions.OpenOptions) (sessions.Handle, error)
	Hold(id func(*http.Request) string, write func(http.ResponseWriter, *apierror.Error), h func(http.ResponseWriter, *http.Request, callerauth.Caller, sessions.Handle)) func(http.ResponseWriter, *http.Request, callerauth.Caller)
	Records(account, door string) []store.Session
}

// Server serves the door on a node.
type Server struct {
	Sessions Sessions
	Plans    plans.Catalog
	// Catalog has the languages of the code interpreter's contexts.
	Catalog *langs.Catalog
	// Secret is the cell's, shared with the gateways: it signs each
	// sandbox's access token (callerauth.SandboxToken), which the gateway
	// checks for envd requests.
	Secret []byte
	Logger *slog.Logger
}

// Routes are the control API and envd.
func (s *Server) Routes() []api.Route {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	ctl := func(pattern string, h api.CallerHandler) api.Route {
		return api.Route{Pattern: pattern, Handle: h, Errors: controlErrorBody}
	}
	byPath := func(r *http.Request) string { return r.PathValue("id") }
	held := func(h heldHandler) api.CallerHandler {
		return s.Sessions.Hold(byPath, writeControlError, ownDoor(writeControlError, h))
	}
	routes := []api.Route{
		ctl("POST "+APIPrefix+"/sandboxes", s.create),
		ctl("POST "+APIPrefix+"/v2/sandboxes", s.create),
		ctl("GET "+APIPrefix+"/sandboxes", s.listV1),
		ctl("GET "+APIPrefix+"/v2/sandboxes", s.list),
		ctl("GET "+APIPrefix+"/sandboxes/{id}", held(s.get)),
		ctl("DELETE "+APIPrefix+"/sandboxes/{id}", held(s.kill)),
		ctl("POST "+APIPrefix+"/sandboxes/{id}/timeout", held(s.setTimeout)),
		ctl("POST "+APIPrefix+"/sandboxes/{id}/refreshes", held(s.refresh)),
		ctl("POST "+APIPrefix+"/sandboxes/{id}/connect", held(s.connect)),
		ctl("POST "+APIPrefix+"/v2/sandboxes/{id}/connect", held(s.connect)),
		ctl("POST "+APIPrefix+"/sandboxes/{id}/resume", held(s.connect)),
	}
	// What E2B has and a session cannot do: a clear refusal, not a 404
	// that reads like a wrong URL.
	for _, p := range []string{"POST /sandboxes/{id}/pause", "POST /sandboxes/{id}/snapshots", "POST /sandboxes/{id}/fork",
		"GET /snapshots", "GET /sandboxes/{id}/metrics", "GET /sandboxes/metrics", "PUT /sandboxes/{id}/network", "GET /sandboxes/{id}/logs", "GET /v2/sandboxes/{id}/logs"} {
		method, path, _ := strings.Cut(p, " ")
		routes = append(routes, ctl(method+" "+APIPrefix+path, unsupported(p)))
	}
	env := func(pattern string, h api.CallerHandler) api.Route {
		return api.Route{Pattern: pattern, Handle: h, Errors: envdErrorBody}
	}
	bySandbox := func(r *http.Request) string { return r.Header.Get(HeaderSandboxID) }
	envd := func(h heldHandler) api.CallerHandler {
		return s.Sessions.Hold(bySandbox, writeEnvdError, ownDoor(writeEnvdError, h))
	}
	procPath, procHandler := processconnect.NewProcessHandler(&processService{s: s})
	fsPath, fsHandler := filesystemconnect.NewFilesystemHandler(&filesystemService{s: s})
	routes = append(routes,
		env("GET "+SandboxPrefix+"/health", envd(s.health)),
		env("GET "+SandboxPrefix+"/files", envd(s.readFile)),
		env("POST "+SandboxPrefix+"/files", envd(s.writeFiles)),
		env("POST "+SandboxPrefix+procPath+"{method}", envd(rpc(procHandler))),
		env("POST "+SandboxPrefix+fsPath+"{method}", envd(rpc(fsHandler))),
		// The code interpreter's (its port 49999, on the same URL).
		env("POST "+SandboxPrefix+"/execute", envd(s.runCode)),
		env("POST "+SandboxPrefix+"/contexts", envd(s.newContext)),
		env("GET "+SandboxPrefix+"/contexts", envd(s.listContexts)),
		env("DELETE "+SandboxPrefix+"/contexts/{cid}", envd(s.deleteContext)),
		env("POST "+SandboxPrefix+"/contexts/{cid}/restart", envd(s.restartContext)),
	)
	return routes
}

// HeaderSandboxID names the sandbox of an envd request (the SDK sends
// E2B_SANDBOX_URL for every sandbox, with this header).
const HeaderSandboxID = "E2b-Sandbox-Id"

type heldHandler = func(http.ResponseWriter, *http.Request, callerauth.Caller, sessions.Handle)

// ownDoor serves only the door's own sandboxes: a session of the API's
// own (POST /v1/sessions) is no E2B sandbox, and answers as a missing one.
func ownDoor(write func(http.ResponseWriter, *apierror.Error), h heldHandler) heldHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller, sb sessions.Handle) {
		if rec := sb.Record(); rec.Door != Door {
			write(w, apierror.New(apierror.SessionNotFound, "no sandbox %q", rec.ID))
			return
		}
		h(w, r, c, sb)
	}
}

// handleKey carries an envd request's sandbox to the Connect services.
type handleKey struct{}

// rpc serves a Connect service for the held sandbox, at the service's
// own path (the SDK appends it to E2B_SANDBOX_URL).
func rpc(h http.Handler) heldHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller, sb sessions.Handle) {
		r2 := r.WithContext(context.WithValue(r.Context(), handleKey{}, held{c: c, sb: sb}))
		r2.URL.Path = r.URL.Path[len(SandboxPrefix):]
		r2.URL.RawPath = ""
		h.ServeHTTP(w, r2)
	}
}

// held is the caller and its sandbox, for the Connect services.
type held struct {
	c  callerauth.Caller
	sb sessions.Handle
}

func heldFrom(ctx context.Context) held {
	h, _ := ctx.Value(handleKey{}).(held)
	return h
}

// health serves envd's GET /health: 204 while the sandbox lives (once
// it is gone, the lookup answers 502, which is how the SDK's isRunning
// tells).
func (s *Server) health(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller, _ sessions.Handle) {
	w.WriteHeader(http.StatusNoContent)
}
