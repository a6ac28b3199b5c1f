// Package apierror is the API's one error shape and its one registry of
// error codes:
//
//	{"error": {"code": "missing_field", "message": "language is required"}}
//
// Every 4xx and 5xx the gateway or a cell sends has this body, so a client
// handles errors one way, and every code has one HTTP status (codes.go),
// the one docs/api.md#errors lists. A door whose clients expect another
// shape (see cell/dialect) renders the same *Error its own way.
package apierror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
)

// Body is the JSON error body.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the error inside a Body.
type Detail struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

// Error is a request the API refuses: a registered code and a message that
// tells the client what to fix.
type Error struct {
	Code    Code
	Message string
}

// New returns the refusal code with a formatted message.
func New(code Code, format string, args ...any) *Error {
	if len(args) > 0 {
		format = fmt.Sprintf(format, args...)
	}
	return &Error{Code: code, Message: format}
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Status is the HTTP status of e's code.
func (e *Error) Status() int { return e.Code.Status() }

// Body is e as the JSON error body.
func (e *Error) Body() Body { return Body{Error: Detail{Code: e.Code, Message: e.Message}} }

// Write sends e with its status and the JSON error body.
func (e *Error) Write(w http.ResponseWriter) { WriteBody(w, e.Status(), e.Body()) }

// WriteBody sends status with body as JSON, marked as not to be sniffed.
func WriteBody(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// As returns err as an *Error when it is one (wrapped or not).
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// Is reports whether err is a refusal with code.
func Is(err error, code Code) bool {
	e, ok := As(err)
	return ok && e.Code == code
}

// internal is what a client is told of a failure that is ours: nothing
// about it, and what to do.
var internal = &Error{Code: Internal, Message: "the execution failed inside SandboxAPI; retry, and report it if it persists"}

// Public is err as a client may see it: a refusal as it is, and anything
// else, which is ours to fix, as internal_error (logged to logger, unless
// it is a client that went away).
func Public(err error, logger *slog.Logger) *Error {
	if e, ok := As(err); ok {
		return e
	}
	if logger != nil && !errors.Is(err, context.Canceled) {
		logger.Error("request failed", "err", err)
	}
	return internal
}

// Respond answers a request that failed with err: a refusal with its own
// status and body, nothing when the client has gone away (no one is left
// to read it), and otherwise a logged 500 that reveals nothing internal.
func Respond(w http.ResponseWriter, logger *slog.Logger, err error) {
	if Gone(err) {
		return
	}
	Public(err, logger).Write(w)
}

// Gone reports whether err says the client went away, so that nobody is
// left to answer.
func Gone(err error) bool {
	_, refused := As(err)
	return !refused && errors.Is(err, context.Canceled)
}
