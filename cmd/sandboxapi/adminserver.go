package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	ledger "github.com/sandboxapi/sandboxapi/billing/usage"
)

// adminSocketName is the admin API's unix socket in the data dir: the
// running service (dev or gateway) answers `sandboxapi admin` on it,
// through its own copy of the accounts (DESIGN.md, "The admin socket").
const adminSocketName = "admin.sock"

// The admin API's paths (docs/billing.md, "Operators").
const (
	adminAccountsPath = "/v1/accounts"
	adminKeysPath     = "/v1/keys"
)

// defaultRotateGrace is how long a rotated key keeps working by default:
// a day for every client to take the new one.
const defaultRotateGrace = 24 * time.Hour

// maxRotateGrace bounds the grace of a rotated key: an old key that works
// for months is one nobody rotated.
const maxRotateGrace = 90 * 24 * time.Hour

// createRequest and created are the admin API's account creation.
type createRequest struct {
	Plan  string `json:"plan"`
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
}

type created struct {
	AccountID string `json:"account_id"`
	APIKey    string `json:"api_key"`
	KeyID     string `json:"key_id"`
	Plan      string `json:"plan"`
}

// accountView is an account with its keys and this month's usage, as
// `admin accounts show` prints it.
type accountView struct {
	Account accounts.Account `json:"account"`
	Keys    []accounts.Key   `json:"keys"`
	Usage   usageView        `json:"usage"`
}

// usageView is an account's executions in a month against its quota.
type usageView struct {
	AccountID  string `json:"account_id"`
	Month      string `json:"month"`
	Plan       string `json:"plan"`
	Executions int64  `json:"executions"`
	Quota      int64  `json:"quota"`
	Remaining  int64  `json:"remaining"`
	// ByGateway is what each gateway counted, as last reported.
	ByGateway map[string]int64 `json:"by_gateway,omitempty"`
	// EgressBytes are what the month's networked executions moved through
	// the egress proxy, as this gateway's ledger holds them.
	EgressBytes int64 `json:"egress_bytes"`
}

// errUnknownPlan is a plan the catalog does not have.
var errUnknownPlan = errors.New("unknown plan")

// checkPlan says whether catalog has the plan, and which it has if not.
func checkPlan(catalog plans.Catalog, plan string) error {
	if _, ok := catalog.Get(plan); !ok {
		return fmt.Errorf("%w %q; the plans are %s", errUnknownPlan, plan, strings.Join(catalog.Names(), ", "))
	}
	return nil
}

// adminAPI is the operators' API over the service's copy of the accounts.
type adminAPI struct {
	dir     *directory.Directory
	catalog plans.Catalog
	// ledger is this process's usage ledger, for its own count, which is
	// fresher than its last report; nil in a process without one.
	ledger *ledger.Ledger
	logger *slog.Logger
}

func (a *adminAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+adminAccountsPath, a.create)
	mux.HandleFunc("GET "+adminAccountsPath, func(w http.ResponseWriter, r *http.Request) {
		all, err := a.dir.List()
		a.answer(w, map[string]any{"accounts": orEmpty(all)}, err)
	})
	mux.HandleFunc("GET "+adminAccountsPath+"/{id}", a.show)
	mux.HandleFunc("POST "+adminAccountsPath+"/{id}/plan", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Plan string `json:"plan"`
		}
		if !decode(w, r, &req) {
			return
		}
		if err := checkPlan(a.catalog, req.Plan); err != nil {
			adminError(w, http.StatusBadRequest, err)
			return
		}
		acct, err := a.dir.SetPlan(r.Context(), r.PathValue("id"), req.Plan)
		a.answer(w, acct, err)
	})
	mux.HandleFunc("POST "+adminAccountsPath+"/{id}/suspend", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Reason string `json:"reason"`
		}
		if !decode(w, r, &req) {
			return
		}
		acct, err := a.dir.Suspend(r.Context(), r.PathValue("id"), req.Reason)
		a.answer(w, acct, err)
	})
	mux.HandleFunc("POST "+adminAccountsPath+"/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
		acct, err := a.dir.Resume(r.Context(), r.PathValue("id"))
		a.answer(w, acct, err)
	})
	mux.HandleFunc("POST "+adminAccountsPath+"/{id}/region", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Region string `json:"region"`
		}
		if !decode(w, r, &req) {
			return
		}
		acct, err := a.dir.SetRegion(r.Context(), r.PathValue("id"), req.Region)
		a.answer(w, acct, err)
	})
	mux.HandleFunc("POST "+adminAccountsPath+"/{id}/keys", func(w http.ResponseWriter, r *http.Request) {
		k, err := a.dir.IssueKey(r.Context(), r.PathValue("id"))
		a.answerStatus(w, http.StatusCreated, k, err)
	})
	mux.HandleFunc("GET "+adminAccountsPath+"/{id}/keys", func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.dir.Account(r.Context(), r.PathValue("id")); err != nil {
			a.answer(w, nil, err)
			return
		}
		keys, err := a.dir.Keys(r.PathValue("id"))
		a.answer(w, map[string]any{"keys": orEmpty(keys)}, err)
	})
	mux.HandleFunc("GET "+adminAccountsPath+"/{id}/usage", func(w http.ResponseWriter, r *http.Request) {
		u, err := a.usage(r.Context(), r.PathValue("id"), r.URL.Query().Get("month"))
		a.answer(w, u, err)
	})
	mux.HandleFunc("POST "+adminKeysPath+"/rotate", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Key   string `json:"key"`
			Grace string `json:"grace,omitempty"`
		}
		if !decode(w, r, &req) {
			return
		}
		grace := defaultRotateGrace
		if req.Grace != "" {
			g, err := time.ParseDuration(req.Grace)
			if err != nil || g < 0 || g > maxRotateGrace {
				adminError(w, http.StatusBadRequest, fmt.Errorf("grace %q: a duration from 0s to %s", req.Grace, maxRotateGrace))
				return
			}
			grace = g
		}
		nk, old, err := a.dir.RotateKey(r.Context(), req.Key, grace)
		a.answerStatus(w, http.StatusCreated, map[string]any{"api_key": nk.APIKey, "key": nk.Key, "old": old}, err)
	})
	mux.HandleFunc("POST "+adminKeysPath+"/revoke", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Key string `json:"key"`
		}
		if !decode(w, r, &req) {
			return
		}
		k, err := a.dir.RevokeKey(r.Context(), req.Key)
		a.answer(w, k, err)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		adminError(w, http.StatusNotFound, fmt.Errorf("no admin endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func (a *adminAPI) create(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if !decode(w, r, &req) {
		return
	}
	if err := checkPlan(a.catalog, req.Plan); err != nil {
		adminError(w, http.StatusBadRequest, err)
		return
	}
	acct, err := a.dir.CreateAccount(r.Context(), accounts.NewAccount{Plan: req.Plan, Name: req.Name, Email: req.Email, Channel: accounts.ChannelDirect})
	if err != nil {
		a.answer(w, nil, err)
		return
	}
	k, err := a.dir.IssueKey(r.Context(), acct.ID)
	if err != nil {
		a.answer(w, nil, fmt.Errorf("account %s made, but no key (make one with admin keys create): %w", acct.ID, err))
		return
	}
	a.logger.Info("admin: account created", "account", acct.ID, "plan", acct.Plan)
	a.answerStatus(w, http.StatusCreated, created{AccountID: acct.ID, APIKey: k.APIKey, KeyID: k.ID, Plan: acct.Plan}, nil)
}

func (a *adminAPI) show(w http.ResponseWriter, r *http.Request) {
	acct, err := a.dir.Account(r.Context(), r.PathValue("id"))
	if err != nil {
		a.answer(w, nil, err)
		return
	}
	keys, err := a.dir.Keys(acct.ID)
	if err != nil {
		a.answer(w, nil, err)
		return
	}
	u, err := a.usage(r.Context(), acct.ID, "")
	a.answer(w, accountView{Account: acct, Keys: orEmpty(keys), Usage: u}, err)
}

// usage is an account's month ("" for this one) as the cell's usage
// reports and this process's own ledger have it.
func (a *adminAPI) usage(ctx context.Context, id, month string) (usageView, error) {
	acct, err := a.dir.Account(ctx, id)
	if err != nil {
		return usageView{}, err
	}
	if month == "" {
		month = ledger.Month(time.Now())
	}
	if _, err := time.Parse(ledger.MonthLayout, month); err != nil || len(month) != len(ledger.MonthLayout) {
		return usageView{}, fmt.Errorf("%w: month %q is not YYYY-MM", accounts.ErrInvalid, month)
	}
	recs, err := a.dir.MonthUsage(acct.ID, month)
	if err != nil {
		return usageView{}, err
	}
	u := usageView{AccountID: acct.ID, Month: month, Plan: acct.Plan, ByGateway: map[string]int64{}}
	for _, rec := range recs {
		u.ByGateway[rec.Gateway] = rec.Used
	}
	if a.ledger != nil {
		if local, err := a.ledger.Count(acct.ID, month); err == nil && local > u.ByGateway[a.dir.Gateway()] {
			u.ByGateway[a.dir.Gateway()] = local
		}
		if n, err := a.ledger.EgressBytes(acct.ID, month); err == nil {
			u.EgressBytes = n
		}
	}
	for gw, n := range u.ByGateway {
		if n == 0 {
			delete(u.ByGateway, gw)
		}
		u.Executions += n
	}
	if p, ok := a.catalog.Get(acct.Plan); ok {
		u.Quota = int64(p.ExecutionsPerMonth)
		u.Remaining = max(u.Quota-u.Executions, 0)
	}
	return u, nil
}

// answer writes v as JSON, or err as the admin API's error.
func (a *adminAPI) answer(w http.ResponseWriter, v any, err error) {
	a.answerStatus(w, http.StatusOK, v, err)
}

func (a *adminAPI) answerStatus(w http.ResponseWriter, status int, v any, err error) {
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	case errors.Is(err, accounts.ErrNotFound), errors.Is(err, accounts.ErrUnknownKey):
		adminError(w, http.StatusNotFound, err)
	case errors.Is(err, accounts.ErrInvalid), errors.Is(err, errUnknownPlan):
		adminError(w, http.StatusBadRequest, err)
	case errors.Is(err, accounts.ErrExists), errors.Is(err, accounts.ErrKeyInUse):
		adminError(w, http.StatusConflict, err)
	case errors.Is(err, directory.ErrUnavailable), errors.Is(err, directory.ErrNotReady):
		adminError(w, http.StatusServiceUnavailable, err)
	default:
		a.logger.Error("admin", "err", err)
		adminError(w, http.StatusInternalServerError, err)
	}
}

func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// decode reads a request's JSON body into v, or answers 400.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(v); err != nil {
		adminError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

// adminServer serves the admin API on the data dir's socket and, when
// configured, on a TCP address behind a token.
type adminServer struct {
	path string
	srvs []*http.Server
}

// serveAdmin listens on path (mode 0600), and on tcpAddr when it is set
// (every request there must carry token as a Bearer token), and serves
// api on both.
func serveAdmin(path string, api *adminAPI, tcpAddr, token string) (*adminServer, error) {
	// A socket already here is a dead service's: a live one would hold
	// the data dir's usage ledger, which this process has open.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	a := &adminServer{path: path}
	a.serve(ownerOnly{ln.(*net.UnixListener)}, api.handler(), api.logger)
	if tcpAddr != "" {
		if len(token) < minAdminToken {
			a.Close()
			return nil, fmt.Errorf("admin_listen needs an admin token of at least %d characters (admin_token_file)", minAdminToken)
		}
		tln, err := net.Listen("tcp", tcpAddr)
		if err != nil {
			a.Close()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
		a.serve(tln, requireToken(token, api.handler()), api.logger)
	}
	return a, nil
}

// minAdminToken is the shortest admin token accepted on TCP.
const minAdminToken = 24

func (a *adminServer) serve(ln net.Listener, h http.Handler, logger *slog.Logger) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	a.srvs = append(a.srvs, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin listener", "err", err)
		}
	}()
}

// requireToken refuses requests without the admin token.
func requireToken(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sandboxapi-admin"`)
			adminError(w, http.StatusUnauthorized, errors.New("the admin API needs the admin token as a Bearer token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Path is the socket's path.
func (a *adminServer) Path() string { return a.path }

// Close stops serving and removes the socket.
func (a *adminServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range a.srvs {
		errs = append(errs, srv.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// adminErrorBody is the admin API's error.
type adminErrorBody struct {
	Error string `json:"error"`
}

func adminError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(adminErrorBody{Error: err.Error()})
}

// ownerOnly accepts connections from this process's user and root only.
// The socket's mode says the same, but only from the chmod after listen
// on; the peer's credentials say it for every connection.
type ownerOnly struct{ *net.UnixListener }

func (l ownerOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if uid, err := peerUID(c); err == nil && (uid == 0 || uid == uint32(os.Geteuid())) {
			return c, nil
		}
		c.Close()
	}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}
