// Package execreq is the execution-request contract of both API dialects:
// it turns a request body (the /v1 contract of sandboxapi-docs.txt, or the
// unsandbox dialect) into an executor.Request that has passed every limit of
// the contract and of the caller's plan, and turns the executor's Result back
// into that dialect's response. Synchronous handlers, batches and async jobs
// all go through it, so a request means the same thing however it arrives.
package execreq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// Error codes of refused requests. They are part of the API: clients branch
// on them, so they never change once published.
const (
	CodeInvalidJSON         = "invalid_json"
	CodeInvalidField        = "invalid_field"
	CodeMissingField        = "missing_field"
	CodeUnsupportedLanguage = "unsupported_language"
	CodeTimeoutExceedsPlan  = "timeout_exceeds_plan"
	CodeUnknownPlan         = "unknown_plan"
	CodePayloadTooLarge     = "payload_too_large"
	CodeCodeTooLarge        = "code_too_large"
	CodeFieldTooLong        = "field_too_long"
	CodeInvalidBase64       = "invalid_base64"
	CodeInvalidZip          = "invalid_zip"
	CodeUnsafePath          = "unsafe_path"
	CodeUnsupportedEntry    = "unsupported_zip_entry"
	CodeTooManyFiles        = "too_many_files"
	CodeFilesTooLarge       = "files_too_large"
	CodeFileConflict        = "file_conflict"
	CodeOptionNotAllowed    = "compiler_option_not_allowed"
	CodeInvalidArguments    = "invalid_arguments"
	CodeAsyncRequired       = "async_required"
	CodeBatchTooLarge       = "batch_too_large"
	CodeEmptyBatch          = "empty_batch"
	CodeInvalidEnv          = "invalid_env"
	CodeNetworkUnavailable  = "network_mode_unavailable"
	CodeWasmUnsupported     = "wasm_not_supported"
	CodeLanguageNotDetected = "language_not_detected"
	CodeQueueTimeout        = "queue_timeout"
	CodeInternal            = "internal_error"
)

// Error is a request the API refuses: the HTTP status, the error code and a
// message that tells the client what to fix.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// Body is the error as the JSON body every API error has.
func (e *Error) Body() apierror.Body {
	return apierror.Body{Error: apierror.Detail{Code: e.Code, Message: e.Message}}
}

func badRequest(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

func tooLarge(code, format string, args ...any) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge, Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error when it is one (wrapped or not).
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// WriteError answers a request that failed with err: an *Error with its own
// status and body, nothing when the client has gone away (no one is left to
// read it), and otherwise a logged 500 that reveals nothing internal.
func WriteError(w http.ResponseWriter, logger *slog.Logger, err error) {
	if e, ok := AsError(err); ok {
		apierror.Write(w, e.Status, e.Code, e.Message)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	logger.Error("request failed", "err", err)
	apierror.Write(w, http.StatusInternalServerError, CodeInternal, "the execution failed inside SandboxAPI; retry, and report it if it persists")
}

// ReadBody reads a request body of at most limit bytes; a larger one is a
// 413, whatever Content-Length claimed.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(CodePayloadTooLarge, "request body exceeds %d bytes", limit)
		}
		return nil, badRequest(CodeInvalidJSON, "the request body could not be read: %v", err)
	}
	return b, nil
}

// PlanFor returns the caller's plan. The gateway only signs plans it knows,
// so a miss means the gateway and this cell disagree on the catalog.
func PlanFor(cat plans.Catalog, name string) (plans.Plan, error) {
	p, ok := cat.Get(name)
	if !ok {
		return plans.Plan{}, &Error{Status: http.StatusForbidden, Code: CodeUnknownPlan,
			Message: fmt.Sprintf("plan %q is not known to this cell", name)}
	}
	return p, nil
}
