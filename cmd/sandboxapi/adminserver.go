package main

import (
	"context"
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
	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// adminSocketName is the admin API's unix socket in the data dir. The
// running service holds accounts.db's lock (bbolt allows one process per
// file), so `sandboxapi admin` asks it to make the change instead, and a
// change made through the service's own handle is what its gateway reads
// on the next request (DESIGN.md, "The admin socket").
const adminSocketName = "admin.sock"

// adminAccountsPath is where the admin API creates accounts.
const adminAccountsPath = "/v1/accounts"

// createRequest and created are the admin API's account creation.
type createRequest struct {
	Plan string `json:"plan"`
	Name string `json:"name,omitempty"`
}

type created struct {
	AccountID string `json:"account_id"`
	APIKey    string `json:"api_key"`
	Plan      string `json:"plan"`
}

// errUnknownPlan is a plan the catalog does not have.
var errUnknownPlan = errors.New("unknown plan")

// createAccount makes an account on a plan of catalog and issues its key:
// the one way both the admin socket and the command without a service do it.
func createAccount(st *accounts.Store, catalog plans.Catalog, req createRequest) (created, error) {
	if err := checkPlan(catalog, req.Plan); err != nil {
		return created{}, err
	}
	a, err := st.CreateAccount(req.Name, req.Plan)
	if err != nil {
		return created{}, err
	}
	key, err := st.IssueKey(a.ID)
	if err != nil {
		return created{}, fmt.Errorf("account %s made, but no key: %w", a.ID, err)
	}
	return created{AccountID: a.ID, APIKey: key, Plan: a.Plan}, nil
}

// checkPlan says whether catalog has the plan, and which it has if not.
func checkPlan(catalog plans.Catalog, plan string) error {
	if _, ok := catalog.Get(plan); !ok {
		return fmt.Errorf("%w %q; the plans are %s", errUnknownPlan, plan, strings.Join(catalog.Names(), ", "))
	}
	return nil
}

// adminServer serves the admin API on the data dir's socket.
type adminServer struct {
	path string
	srv  *http.Server
}

// serveAdmin listens on path (mode 0600) and serves account creation
// against st, the process's accounts store, and catalog, its plans.
func serveAdmin(path string, st *accounts.Store, catalog plans.Catalog, logger *slog.Logger) (*adminServer, error) {
	// A socket already here is a dead service's: a live one would hold
	// accounts.db, which this process has open.
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
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+adminAccountsPath, func(w http.ResponseWriter, r *http.Request) {
		var req createRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
			adminError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
			return
		}
		c, err := createAccount(st, catalog, req)
		switch {
		case errors.Is(err, errUnknownPlan), errors.Is(err, accounts.ErrInvalid):
			adminError(w, http.StatusBadRequest, err)
			return
		case err != nil:
			logger.Error("admin: creating an account", "err", err)
			adminError(w, http.StatusInternalServerError, err)
			return
		}
		logger.Info("admin: account created", "account", c.AccountID, "plan", c.Plan)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(c)
	})
	a := &adminServer{path: path, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := a.srv.Serve(ownerOnly{ln.(*net.UnixListener)}); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin socket", "err", err)
		}
	}()
	return a, nil
}

// Path is the socket's path.
func (a *adminServer) Path() string { return a.path }

// Close stops serving and removes the socket.
func (a *adminServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.srv.Shutdown(ctx)
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
