package e2b

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/sandboxes/egress"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Bounds of a create's metadata and envVars, which the door keeps for
// the sandbox's life (metadata in its record, on every node).
const (
	MaxMetadata      = 32
	MaxMetadataChars = 512
	MaxEnvVars       = 64
	MaxEnvVarChars   = 4096
	maxControlBody   = 64 << 10
)

// CreateRequest is E2B's NewSandbox (POST /sandboxes, /v2/sandboxes):
// the fields the door serves. Others the SDK sends (mcp, iam,
// autoResume, ...) are read where they change nothing and refused where
// they would (autoPause, volumeMounts, a network of its own).
type CreateRequest struct {
	TemplateID string            `json:"templateID"`
	Timeout    *float64          `json:"timeout"`
	Metadata   map[string]string `json:"metadata"`
	EnvVars    map[string]string `json:"envVars"`
	Secure     *bool             `json:"secure"`
	// AllowInternetAccess (the SDK sends true unless told otherwise)
	// maps to the plan's egress: never refused.
	AllowInternetAccess *bool           `json:"allow_internet_access"`
	AutoPause           *bool           `json:"autoPause"`
	VolumeMounts        []any           `json:"volumeMounts"`
	Network             json.RawMessage `json:"network"`
}

// DecodeCreate reads a create's body; its errors are the API's refusals.
func DecodeCreate(body []byte) (CreateRequest, error) {
	var req CreateRequest
	// The SDK always sends a body; curl may not.
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := execreq.DecodeJSON(body, &req, "the request"); err != nil {
			return req, err
		}
	}
	if req.TemplateID == "" {
		req.TemplateID = DefaultTemplate
	}
	if _, ok := templates[req.TemplateID]; !ok {
		return req, apierror.New(apierror.TemplateUnavailable, "template %q is not available: this service serves %q (E2B's default) and %q, both a python3 sandbox with a shell; custom templates are not built here (docs/e2b.md)", req.TemplateID, "base", "code-interpreter-v1")
	}
	if req.Timeout != nil && (*req.Timeout < 0 || math.IsNaN(*req.Timeout) || *req.Timeout > math.MaxInt32) {
		return req, apierror.New(apierror.InvalidField, "timeout must be a number of seconds, 0 or more")
	}
	if len(req.Metadata) > MaxMetadata {
		return req, apierror.New(apierror.InvalidField, "metadata may have at most %d keys", MaxMetadata)
	}
	for k, v := range req.Metadata {
		if len(k) == 0 || len(k)+len(v) > MaxMetadataChars {
			return req, apierror.New(apierror.InvalidField, "metadata %q: keys must not be empty, and a key and its value at most %d characters", k, MaxMetadataChars)
		}
	}
	if len(req.EnvVars) > MaxEnvVars {
		return req, apierror.New(apierror.InvalidField, "envVars may have at most %d variables", MaxEnvVars)
	}
	for k, v := range req.EnvVars {
		if err := checkEnv(k, v); err != nil {
			return req, err
		}
	}
	switch {
	case req.AutoPause != nil && *req.AutoPause:
		return req, apierror.New(apierror.UnsupportedByDoor, "autoPause (onTimeout: 'pause') is not supported: a sandbox here cannot be paused; it ends at its timeout (docs/e2b.md)")
	case len(req.VolumeMounts) > 0:
		return req, apierror.New(apierror.UnsupportedByDoor, "volumeMounts are not supported: a sandbox's files live in its home directory for its life (docs/e2b.md)")
	case len(req.Network) > 0 && string(req.Network) != "null" && string(req.Network) != "{}":
		return req, apierror.New(apierror.UnsupportedByDoor, "network rules are not supported: a sandbox reaches what the plan's egress policy allows when allow_internet_access is true, else nothing (docs/e2b.md)")
	}
	return req, nil
}

// checkEnv refuses an environment variable a command could not be given.
func checkEnv(k, v string) error {
	if !executor.EnvVarOK(k, v) || len(k)+len(v) > MaxEnvVarChars {
		return apierror.New(apierror.InvalidField, "environment variable %q: a name without '=' or NUL, a value without NUL, at most %d characters in all", k, MaxEnvVarChars)
	}
	return nil
}

// Sandbox is E2B's answer to create and connect.
type Sandbox struct {
	SandboxID           string  `json:"sandboxID"`
	TemplateID          string  `json:"templateID"`
	ClientID            string  `json:"clientID"`
	Alias               string  `json:"alias,omitempty"`
	EnvdVersion         string  `json:"envdVersion"`
	EnvdAccessToken     string  `json:"envdAccessToken"`
	TrafficAccessToken  *string `json:"trafficAccessToken"`
	Domain              *string `json:"domain"`
	AllowInternetAccess bool    `json:"allowInternetAccess"`
}

// SandboxDetail is E2B's GET /sandboxes/{id}, and each entry of a list
// (ListedSandbox, which lacks the token).
type SandboxDetail struct {
	SandboxID       string            `json:"sandboxID"`
	TemplateID      string            `json:"templateID"`
	ClientID        string            `json:"clientID"`
	Alias           string            `json:"alias,omitempty"`
	StartedAt       string            `json:"startedAt"`
	EndAt           string            `json:"endAt"`
	EnvdVersion     string            `json:"envdVersion"`
	EnvdAccessToken string            `json:"envdAccessToken,omitempty"`
	Domain          *string           `json:"domain"`
	CPUCount        int               `json:"cpuCount"`
	MemoryMB        int64             `json:"memoryMB"`
	DiskSizeMB      int64             `json:"diskSizeMB"`
	Metadata        map[string]string `json:"metadata"`
	State           string            `json:"state"`
	// AllowInternetAccess says whether the sandbox has a network: the
	// plan's egress policy, when the create asked for internet access.
	AllowInternetAccess bool  `json:"allowInternetAccess"`
	VolumeMounts        []any `json:"volumeMounts"`
}

// ClientID is what the door says for E2B's clientID (E2B's cluster
// client; meaningless here, but the SDK's types require it).
const ClientID = "sandboxapi"

// metaTemplate and metaNetwork are the record's meta keys the door keeps
// beside the create's metadata (whose keys go under metaPrefix).
const (
	metaTemplate = "template"
	metaNetwork  = "network"
	metaPrefix   = "m."
)

// box is what the door keeps with a live sandbox on its node: the
// create's environment variables, for its commands, and its processes.
type box struct {
	env      []string
	procs    procTable
	watchers watchers

	codeOnce sync.Once
	code     *codeContexts
}

// contexts are the box's code interpreter contexts.
func (b *box) contexts() *codeContexts {
	b.codeOnce.Do(func() { b.code = &codeContexts{defaults: map[string]string{}} })
	return b.code
}

func boxOf(sb sessions.Handle) *box {
	return sb.Data(func() any { return &box{} }).(*box)
}

// create serves POST /sandboxes and /v2/sandboxes.
func (s *Server) create(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	body, err := execreq.ReadBody(w, r, maxControlBody)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	req, err := DecodeCreate(body)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	plan, err := execreq.PlanFor(s.Plans, c.Plan)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	lifetime := DefaultTimeout
	if req.Timeout != nil {
		lifetime = time.Duration(*req.Timeout * float64(time.Second))
	}
	pol, err := internet(req.AllowInternetAccess, plan)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	meta := map[string]string{metaTemplate: templates[req.TemplateID]}
	if pol != nil {
		meta[metaNetwork] = "plan"
	}
	for k, v := range req.Metadata {
		meta[metaPrefix+k] = v
	}
	sb, err := s.Sessions.OpenDoor(r.Context(), c, sessions.OpenOptions{Language: Language, Door: Door, Meta: meta, Lifetime: lifetime, Network: pol})
	if err != nil {
		if after := sessions.RetryAfter(err); after != "" {
			w.Header().Set("Retry-After", after)
		}
		if apierror.Gone(err) || r.Context().Err() != nil {
			return
		}
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	b := boxOf(sb)
	for k, v := range req.EnvVars {
		b.env = append(b.env, k+"="+v)
	}
	slices.Sort(b.env)
	api.WriteJSON(w, http.StatusCreated, s.sandbox(c, sb.Record()))
}

// internet is the sandbox's network: the plan's egress policy when the
// create asks for internet access (the SDK's default) and the plan has
// one, else none; the answer's allowInternetAccess says which.
func internet(asked *bool, plan plans.Plan) (*egress.Policy, error) {
	if asked != nil && !*asked {
		return nil, nil
	}
	if !plan.NodeEgress || len(plan.NodeNetworkAllow) == 0 {
		return nil, nil
	}
	return execreq.NetworkPolicy(&execreq.Network{Allow: plan.NodeNetworkAllow}, plan)
}

func (s *Server) sandbox(c callerauth.Caller, rec store.Session) Sandbox {
	token := callerauth.SandboxToken(s.Secret, c.AccountID, rec.ID)
	// The same token as the traffic token: the code interpreter sends
	// its context calls with that one only.
	return Sandbox{SandboxID: rec.ID, TemplateID: rec.Meta[metaTemplate], ClientID: ClientID, EnvdVersion: EnvdVersion,
		EnvdAccessToken: token, TrafficAccessToken: &token, AllowInternetAccess: rec.Meta[metaNetwork] != ""}
}

func (s *Server) detail(rec store.Session, token string) SandboxDetail {
	meta := map[string]string{}
	for k, v := range rec.Meta {
		if name, ok := strings.CutPrefix(k, metaPrefix); ok {
			meta[name] = v
		}
	}
	return SandboxDetail{SandboxID: rec.ID, TemplateID: rec.Meta[metaTemplate], ClientID: ClientID,
		StartedAt: rfc3339(rec.CreatedAt), EndAt: rfc3339(rec.ExpiresAt), EnvdVersion: EnvdVersion, EnvdAccessToken: token,
		CPUCount: 1, MemoryMB: executor.DefaultLimits.MemoryBytes >> 20, DiskSizeMB: executor.DefaultLimits.WorkDirBytes >> 20,
		Metadata: meta, State: "running", AllowInternetAccess: rec.Meta[metaNetwork] != "", VolumeMounts: []any{}}
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// get serves GET /sandboxes/{id}.
func (s *Server) get(w http.ResponseWriter, _ *http.Request, c callerauth.Caller, sb sessions.Handle) {
	rec := sb.Record()
	api.WriteJSON(w, http.StatusOK, s.detail(rec, callerauth.SandboxToken(s.Secret, c.AccountID, rec.ID)))
}

// kill serves DELETE /sandboxes/{id}: the sandbox ends, a running
// command with it.
func (s *Server) kill(w http.ResponseWriter, _ *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	sb.End("killed through the E2B API")
	w.WriteHeader(http.StatusNoContent)
}

// timeoutBody is POST /sandboxes/{id}/timeout, and connect's.
type timeoutBody struct {
	Timeout *float64 `json:"timeout"`
}

// readTimeout reads a body's timeout in seconds; required says it must
// be there.
func readTimeout(w http.ResponseWriter, r *http.Request, required bool) (time.Duration, bool, error) {
	body, err := execreq.ReadBody(w, r, maxControlBody)
	if err != nil {
		return 0, false, err
	}
	var b timeoutBody
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := execreq.DecodeJSON(body, &b, "the request"); err != nil {
			return 0, false, err
		}
	}
	switch {
	case b.Timeout == nil && required:
		return 0, false, apierror.New(apierror.MissingField, "timeout is required: the sandbox's lifetime from now, in seconds")
	case b.Timeout == nil:
		return 0, false, nil
	case *b.Timeout < 0 || math.IsNaN(*b.Timeout) || *b.Timeout > math.MaxInt32:
		return 0, false, apierror.New(apierror.InvalidField, "timeout must be a number of seconds, 0 or more")
	}
	return time.Duration(*b.Timeout * float64(time.Second)), true, nil
}

// setTimeout serves POST /sandboxes/{id}/timeout: the sandbox now ends
// timeout seconds from now (E2B's lifetime, capped as at create).
func (s *Server) setTimeout(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	d, _, err := readTimeout(w, r, true)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	sb.SetLifetime(d)
	w.WriteHeader(http.StatusNoContent)
}

// refresh serves POST /sandboxes/{id}/refreshes (E2B's older keep-alive:
// {duration} more seconds, 0..3600).
func (s *Server) refresh(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	body, err := execreq.ReadBody(w, r, maxControlBody)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	var b struct {
		Duration *float64 `json:"duration"`
	}
	if len(strings.TrimSpace(string(body))) > 0 {
		if err := execreq.DecodeJSON(body, &b, "the request"); err != nil {
			writeControlError(w, apierror.Public(err, s.Logger))
			return
		}
	}
	d := DefaultTimeout
	if b.Duration != nil {
		if *b.Duration < 0 || *b.Duration > 3600 || math.IsNaN(*b.Duration) {
			writeControlError(w, apierror.New(apierror.InvalidField, "duration must be 0 to 3600 seconds"))
			return
		}
		d = time.Duration(*b.Duration * float64(time.Second))
	}
	extendLifetime(sb, d)
	w.WriteHeader(http.StatusNoContent)
}

// extendLifetime makes sb end no sooner than d from now.
func extendLifetime(sb sessions.Handle, d time.Duration) {
	if left := time.Until(sb.Record().ExpiresAt); d > left {
		sb.SetLifetime(d)
	}
}

// connect serves POST /v2/sandboxes/{id}/connect (Sandbox.connect), and
// the older /connect and /resume: a running sandbox is connected to as
// it is; a timeout makes it live at least that long from now, as E2B
// does for a running sandbox.
func (s *Server) connect(w http.ResponseWriter, r *http.Request, c callerauth.Caller, sb sessions.Handle) {
	d, ok, err := readTimeout(w, r, false)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	if ok {
		extendLifetime(sb, d)
	}
	api.WriteJSON(w, http.StatusOK, s.sandbox(c, sb.Record()))
}

// MaxListLimit bounds a page of GET /v2/sandboxes.
const MaxListLimit = 100

// list serves GET /v2/sandboxes: the caller's running sandboxes, oldest
// first, paged by x-next-token (E2B's nextToken). Paused sandboxes do not
// exist here, so a list of only those is empty.
func (s *Server) list(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	q := r.URL.Query()
	limit := MaxListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			writeControlError(w, apierror.New(apierror.InvalidField, "limit must be 1 to %d", MaxListLimit))
			return
		}
		limit = n
	}
	recs, err := s.matching(c, q)
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	if tok := q.Get("nextToken"); tok != "" {
		after, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			writeControlError(w, apierror.New(apierror.InvalidField, "nextToken is not one this API gave"))
			return
		}
		i := slices.IndexFunc(recs, func(rec store.Session) bool { return rec.ID == string(after) })
		if i < 0 {
			// That sandbox has ended since: start from the first one
			// created after it, which its id cannot tell, so from its
			// place in the order.
			recs = slices.DeleteFunc(recs, func(rec store.Session) bool { return rec.ID <= string(after) })
		} else {
			recs = recs[i+1:]
		}
	}
	if len(recs) > limit {
		recs = recs[:limit]
		w.Header().Set("X-Next-Token", base64.RawURLEncoding.EncodeToString([]byte(recs[limit-1].ID)))
	}
	out := make([]SandboxDetail, 0, len(recs))
	for _, rec := range recs {
		out = append(out, s.detail(rec, ""))
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// listV1 serves GET /sandboxes (E2B's first list, unpaged).
func (s *Server) listV1(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	recs, err := s.matching(c, r.URL.Query())
	if err != nil {
		writeControlError(w, apierror.Public(err, s.Logger))
		return
	}
	out := make([]SandboxDetail, 0, len(recs))
	for _, rec := range recs {
		out = append(out, s.detail(rec, ""))
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// matching are the caller's sandboxes a list's query selects, in id
// order within creation time.
func (s *Server) matching(c callerauth.Caller, q url.Values) ([]store.Session, error) {
	states := splitList(q["state"])
	if len(states) > 0 && !slices.Contains(states, "running") {
		for _, st := range states {
			if st != "paused" {
				return nil, apierror.New(apierror.InvalidField, "state %q: a sandbox is running or paused", st)
			}
		}
		return nil, nil // none is ever paused
	}
	want, err := url.ParseQuery(q.Get("metadata"))
	if err != nil {
		return nil, apierror.New(apierror.InvalidField, "metadata must be key=value pairs joined by &, each URL-encoded")
	}
	template := q.Get("template")
	var out []store.Session
	for _, rec := range s.Sessions.Records(c.AccountID, Door) {
		if template != "" && rec.Meta[metaTemplate] != template {
			continue
		}
		if matchesMeta(rec, want) {
			out = append(out, rec)
		}
	}
	return out, nil
}

func matchesMeta(rec store.Session, want url.Values) bool {
	for k, vs := range want {
		if got, ok := rec.Meta[metaPrefix+k]; !ok || !slices.Contains(vs, got) {
			return false
		}
	}
	return true
}

// splitList reads a query list, repeated or comma-separated.
func splitList(vs []string) []string {
	var out []string
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
