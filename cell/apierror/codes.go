package apierror

import "net/http"

// Code is an error code of the API. Clients branch on codes, so a code
// never changes once published, and each has one HTTP status.
type Code string

// The codes. Every one is listed, with its status, in docs/api.md#errors;
// TestDocsListEveryCode holds the two together.
const (
	// The request itself.
	InvalidJSON         Code = "invalid_json"
	InvalidField        Code = "invalid_field"
	MissingField        Code = "missing_field"
	UnsupportedLanguage Code = "unsupported_language"
	TimeoutExceedsPlan  Code = "timeout_exceeds_plan"
	FieldTooLong        Code = "field_too_long"
	InvalidBase64       Code = "invalid_base64"
	InvalidZip          Code = "invalid_zip"
	UnsafePath          Code = "unsafe_path"
	UnsupportedEntry    Code = "unsupported_zip_entry"
	TooManyFiles        Code = "too_many_files"
	FilesTooLarge       Code = "files_too_large"
	FileConflict        Code = "file_conflict"
	OptionNotAllowed    Code = "compiler_option_not_allowed"
	InvalidArguments    Code = "invalid_arguments"
	AsyncRequired       Code = "async_required"
	BatchTooLarge       Code = "batch_too_large"
	EmptyBatch          Code = "empty_batch"
	InvalidEnv          Code = "invalid_env"
	NetworkUnavailable  Code = "network_mode_unavailable"
	InvalidHostPattern  Code = "invalid_host_pattern"
	WasmUnsupported     Code = "wasm_not_supported"
	LanguageNotDetected Code = "language_not_detected"
	InvalidCallbackURL  Code = "invalid_callback_url"
	UnsupportedSession  Code = "unsupported_in_session"
	PackageNotCached    Code = "package_not_available"
	InvalidPackage      Code = "invalid_package"
	ManagerMismatch     Code = "manager_mismatch"
	PayloadTooLarge     Code = "payload_too_large"
	CodeTooLarge        Code = "code_too_large"
	InstallFailed       Code = "install_failed"
	IdempotencyReused   Code = "idempotency_key_reused"
	// A door's call that this service has no equivalent of (E2B's pause,
	// snapshots), and a template it does not serve.
	UnsupportedByDoor   Code = "unsupported_by_door"
	TemplateUnavailable Code = "template_not_available"

	// The request as HTTP: what Go's HTTP server refuses before any
	// handler, answered as JSON by the gateway (caddy-modules/conns).
	MalformedRequest            Code = "malformed_request"
	BodyTimeout                 Code = "body_timeout"
	ExpectationFailed           Code = "expectation_failed"
	HeadersTooLarge             Code = "headers_too_large"
	UnsupportedTransferEncoding Code = "unsupported_transfer_encoding"
	HTTPVersionNotSupported     Code = "http_version_not_supported"

	// Who is calling, and what their plan includes.
	MissingAPIKey        Code = "missing_api_key"
	InvalidAPIKey        Code = "invalid_api_key"
	InvalidProxySecret   Code = "invalid_proxy_secret"
	AccountSuspended     Code = "account_suspended"
	GatewayRequired      Code = "gateway_required"
	UnknownPlan          Code = "unknown_plan"
	AsyncNotInPlan       Code = "async_not_in_plan"
	SessionsNotInPlan    Code = "sessions_not_in_plan"
	StreamingNotInPlan   Code = "streaming_not_in_plan"
	PackagesNotInPlan    Code = "packages_not_in_plan"
	PackageNotInPlan     Code = "package_not_in_plan"
	RateLimitExceeded    Code = "rate_limit_exceeded"
	MonthlyQuotaExceeded Code = "monthly_quota_exceeded"
	TooManyJobs          Code = "too_many_jobs"
	SessionLimit         Code = "session_limit_reached"
	TooManyConnections   Code = "too_many_connections"
	NetworkNotInPlan     Code = "network_not_in_plan"
	HostNotInPlan        Code = "network_host_not_in_plan"

	// What the request names.
	NotFound           Code = "not_found"
	MethodNotAllowed   Code = "method_not_allowed"
	JobNotFound        Code = "job_not_found"
	SessionNotFound    Code = "session_not_found"
	SessionLost        Code = "session_lost"
	JobNotCancellable  Code = "job_not_cancellable"
	QueueTimeout       Code = "queue_timeout"
	Internal           Code = "internal_error"
	Unavailable        Code = "service_unavailable"
	NodeAtCapacity     Code = "node_at_capacity"
	SandboxUnavailable Code = "sandbox_unavailable"
)

// statuses is the registry: every code and its HTTP status.
var statuses = map[Code]int{
	InvalidJSON:         http.StatusBadRequest,
	InvalidField:        http.StatusBadRequest,
	MissingField:        http.StatusBadRequest,
	UnsupportedLanguage: http.StatusBadRequest,
	TimeoutExceedsPlan:  http.StatusBadRequest,
	FieldTooLong:        http.StatusBadRequest,
	InvalidBase64:       http.StatusBadRequest,
	InvalidZip:          http.StatusBadRequest,
	UnsafePath:          http.StatusBadRequest,
	UnsupportedEntry:    http.StatusBadRequest,
	TooManyFiles:        http.StatusBadRequest,
	FilesTooLarge:       http.StatusBadRequest,
	FileConflict:        http.StatusBadRequest,
	OptionNotAllowed:    http.StatusBadRequest,
	InvalidArguments:    http.StatusBadRequest,
	AsyncRequired:       http.StatusBadRequest,
	BatchTooLarge:       http.StatusBadRequest,
	EmptyBatch:          http.StatusBadRequest,
	InvalidEnv:          http.StatusBadRequest,
	NetworkUnavailable:  http.StatusBadRequest,
	InvalidHostPattern:  http.StatusBadRequest,
	WasmUnsupported:     http.StatusBadRequest,
	LanguageNotDetected: http.StatusBadRequest,
	InvalidCallbackURL:  http.StatusBadRequest,
	UnsupportedSession:  http.StatusBadRequest,
	PackageNotCached:    http.StatusBadRequest,
	InvalidPackage:      http.StatusBadRequest,
	ManagerMismatch:     http.StatusBadRequest,
	PayloadTooLarge:     http.StatusRequestEntityTooLarge,
	CodeTooLarge:        http.StatusRequestEntityTooLarge,
	InstallFailed:       http.StatusUnprocessableEntity,
	IdempotencyReused:   http.StatusUnprocessableEntity,
	UnsupportedByDoor:   http.StatusBadRequest,
	TemplateUnavailable: http.StatusBadRequest,

	MalformedRequest:            http.StatusBadRequest,
	BodyTimeout:                 http.StatusRequestTimeout,
	ExpectationFailed:           http.StatusExpectationFailed,
	HeadersTooLarge:             http.StatusRequestHeaderFieldsTooLarge,
	UnsupportedTransferEncoding: http.StatusNotImplemented,
	HTTPVersionNotSupported:     http.StatusHTTPVersionNotSupported,

	MissingAPIKey:        http.StatusUnauthorized,
	InvalidAPIKey:        http.StatusUnauthorized,
	InvalidProxySecret:   http.StatusForbidden,
	AccountSuspended:     http.StatusForbidden,
	GatewayRequired:      http.StatusForbidden,
	UnknownPlan:          http.StatusForbidden,
	AsyncNotInPlan:       http.StatusForbidden,
	SessionsNotInPlan:    http.StatusForbidden,
	StreamingNotInPlan:   http.StatusForbidden,
	PackagesNotInPlan:    http.StatusForbidden,
	PackageNotInPlan:     http.StatusForbidden,
	RateLimitExceeded:    http.StatusTooManyRequests,
	MonthlyQuotaExceeded: http.StatusTooManyRequests,
	TooManyJobs:          http.StatusTooManyRequests,
	SessionLimit:         http.StatusTooManyRequests,
	TooManyConnections:   http.StatusTooManyRequests,
	NetworkNotInPlan:     http.StatusForbidden,
	HostNotInPlan:        http.StatusForbidden,

	NotFound:           http.StatusNotFound,
	MethodNotAllowed:   http.StatusMethodNotAllowed,
	JobNotFound:        http.StatusNotFound,
	SessionNotFound:    http.StatusNotFound,
	SessionLost:        http.StatusGone,
	JobNotCancellable:  http.StatusConflict,
	QueueTimeout:       http.StatusRequestTimeout,
	Internal:           http.StatusInternalServerError,
	Unavailable:        http.StatusServiceUnavailable,
	NodeAtCapacity:     http.StatusServiceUnavailable,
	SandboxUnavailable: http.StatusServiceUnavailable,
}

// Status is the code's HTTP status. A code missing from the registry is
// a bug of ours, so it answers 500.
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Codes returns every registered code and its status.
func Codes() map[Code]int {
	out := make(map[Code]int, len(statuses))
	for c, s := range statuses {
		out[c] = s
	}
	return out
}
