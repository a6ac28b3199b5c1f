package directory

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Prefix is where a node serves the accounts table to gateways:
// POST Prefix/apply runs an operation, GET Prefix/changes is the feed.
const Prefix = "/internal/accounts"

// HeaderIndex is, on an apply's answer, the log index the node had
// applied once the operation was on its copy: a gateway waits for its own
// copy to reach it, so a key it just made works on its next request.
const HeaderIndex = callerauth.Prefix + "Accounts-Index"

// maxOpBody bounds an operation's body: the largest is a usage report.
const maxOpBody = 4 << 20

// MaxWait bounds how long a feed request waits for a change.
const MaxWait = 60 * time.Second

// Backend is what the routes use: a *store.Store.
type Backend interface {
	ApplyAccounts(ctx context.Context, op accounts.Op) (accounts.Result, error)
	Accounts(read func(t *accounts.Table, applied uint64))
	Changed() <-chan struct{}
	Consistent(ctx context.Context) error
}

var _ Backend = (*store.Store)(nil)

// Routes are the node's routes of the accounts table, to mount on its
// api.Server (which checks the signature); each refuses any caller but a
// gateway.
func Routes(st Backend) []api.Route {
	return []api.Route{
		{Pattern: "POST " + Prefix + "/apply", Handle: serveApply(st)},
		{Pattern: "GET " + Prefix + "/changes", Handle: serveChanges(st)},
	}
}

func gatewayOnly(w http.ResponseWriter, c callerauth.Caller) bool {
	if c.AccountID == callerauth.GatewayCaller {
		return false
	}
	apierror.New(apierror.GatewayRequired, "the accounts routes take only a gateway's own calls").Write(w)
	return true
}

func serveApply(st Backend) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		if gatewayOnly(w, c) {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxOpBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				apierror.New(apierror.PayloadTooLarge, "an accounts operation is limited to %d bytes", maxOpBody).Write(w)
				return
			}
			apierror.New(apierror.MalformedRequest, "reading the body: %v", err).Write(w)
			return
		}
		var op accounts.Op
		if err := json.Unmarshal(body, &op); err != nil || op.Name == "" {
			apierror.New(apierror.InvalidJSON, "the body is not an accounts operation").Write(w)
			return
		}
		res, err := st.ApplyAccounts(r.Context(), op)
		if err != nil {
			// No leader, a lost write: 503 with Retry-After, as the API
			// answers them; the gateway tries again.
			apierror.Respond(w, nil, err)
			return
		}
		var applied uint64
		st.Accounts(func(_ *accounts.Table, idx uint64) { applied = idx })
		w.Header().Set(HeaderIndex, strconv.FormatUint(applied, 10))
		writeJSON(w, res)
	}
}

// serveChanges answers GET Prefix/changes?after=N&wait=MS: the records
// changed after index N, once there are any or the wait is over (a
// blocking query, as Consul's and Nomad's). after=0 is the whole table,
// read after the node has caught up with the leader, so a gateway's first
// copy misses nothing written before it asked.
func serveChanges(st Backend) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		if gatewayOnly(w, c) {
			return
		}
		q := r.URL.Query()
		after, err := strconv.ParseUint(q.Get("after"), 10, 64)
		if q.Get("after") == "" {
			after, err = 0, nil
		}
		waitMS, werr := strconv.ParseInt(q.Get("wait"), 10, 64)
		if err != nil || werr != nil && q.Get("wait") != "" || waitMS < 0 {
			apierror.New(apierror.InvalidField, "after and wait must be non-negative integers").Write(w)
			return
		}
		wait := min(time.Duration(waitMS)*time.Millisecond, MaxWait)
		ctx := r.Context()
		if after == 0 {
			if err := st.Consistent(ctx); err != nil {
				apierror.Respond(w, nil, err)
				return
			}
		}
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for {
			changed := st.Changed()
			var ch accounts.Changes
			st.Accounts(func(t *accounts.Table, applied uint64) { ch = t.ChangesAfter(after, applied) })
			if !ch.Empty() || after == 0 {
				writeJSON(w, ch)
				return
			}
			select {
			case <-changed:
			case <-timer.C:
				writeJSON(w, ch)
				return
			case <-ctx.Done():
				return
			}
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}
