package e2b

import (
	"net/http"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// ErrorBody is E2B's error: the HTTP status again, and a message (the
// SDK reads code to tell a missing sandbox, and shows message). Error
// is our code (docs/api.md#errors), for clients that branch on it.
type ErrorBody struct {
	Code    int           `json:"code"`
	Message string        `json:"message"`
	Error   apierror.Code `json:"error,omitempty"`
	// SandboxID names the sandbox an envd request found gone, as E2B's
	// proxy says it.
	SandboxID string `json:"sandboxId,omitempty"`
}

// controlErrorBody renders e in E2B's shape.
func controlErrorBody(e *apierror.Error) (int, any) {
	return e.Status(), ErrorBody{Code: e.Status(), Message: e.Message, Error: e.Code}
}

func writeControlError(w http.ResponseWriter, e *apierror.Error) {
	status, body := controlErrorBody(e)
	api.WriteJSON(w, status, body)
}

// envdErrorBody renders e as envd and E2B's proxy do: a sandbox that is
// missing, another account's, or gone is 502 "sandbox not found", which
// the SDK's isRunning takes for a sandbox that is not running and its
// RPCs turn into "the sandbox was not found" (TimeoutError), the errors
// it raises for E2B's own killed or timed-out sandboxes.
func envdErrorBody(e *apierror.Error) (int, any) {
	if e.Code == apierror.SessionNotFound || e.Code == apierror.SessionLost {
		return http.StatusBadGateway, ErrorBody{Code: http.StatusBadGateway, Message: "The sandbox was not found: " + e.Message, Error: e.Code}
	}
	return controlErrorBody(e)
}

func writeEnvdError(w http.ResponseWriter, e *apierror.Error) {
	status, body := envdErrorBody(e)
	api.WriteJSON(w, status, body)
}

// unsupported answers an E2B call sessions cannot serve.
func unsupported(call string) api.CallerHandler {
	return func(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller) {
		writeControlError(w, apierror.New(apierror.UnsupportedByDoor,
			"%s is not supported here: a SandboxAPI sandbox is a gVisor session that cannot be paused, snapshotted, forked or metered per sandbox (docs/e2b.md)", call))
	}
}
