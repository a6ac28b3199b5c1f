// Package cluster is the HTTP side of a cell's raft store: the internal
// routes through which a node serves its store's forwarded operations
// (store.Serve) and its view of the cell, and the Client that sends a
// follower's operations to the leader (store.Forwarder). Both ends sign
// and check requests with the cell secret as node-to-node calls
// (callerauth.NodeCaller); nothing else is let in.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/store"
)

// Prefix is the path under which the routes live: POST Prefix/<op> for
// each store operation and GET Prefix for the cell's members.
const Prefix = "/internal/cluster"

// Headers of node-to-node calls. They carry the internal prefix, so the
// gateway strips any a client sends.
const (
	// HeaderTimeout is how many milliseconds the caller will wait, so the
	// leader stops working on the request when nobody is left to answer.
	HeaderTimeout = callerauth.Prefix + "Timeout-Ms"
	// HeaderNode names the calling node, for the serving node's logs.
	HeaderNode = callerauth.Prefix + "Node"
)

// MaxBody bounds a request's and an answer's body. An answer carries a job
// with its result, so it is sized for the largest result, with room.
const MaxBody = 64 << 20

// Backend is what the routes read and call: a *store.Store.
type Backend interface {
	Serve(ctx context.Context, op string, body []byte) ([]byte, error)
	Servers() ([]store.Server, error)
	LeaderID() string
	Nodes() []store.NodeInfo
}

var _ Backend = (*store.Store)(nil)

// Routes are the internal routes, to mount on the node's api.Server: it
// checks the gateway signature, and each route then refuses any caller but
// a node (403).
func Routes(st Backend) []api.Route {
	routes := []api.Route{{Pattern: "GET " + Prefix, Handle: members(st)}}
	for _, op := range store.Ops {
		routes = append(routes, api.Route{Pattern: "POST " + Prefix + "/" + op, Handle: serveOp(st, op)})
	}
	return routes
}

// Handler serves Routes on its own, checking the signature itself, for a
// node (or a test) that does not serve them through an api.Server.
func Handler(st Backend, secret []byte) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range Routes(st) {
		mux.Handle(rt.Pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c, err := callerauth.Verify(r.Header, secret, time.Now())
			if err != nil {
				apierror.New(apierror.GatewayRequired, "internal cluster routes take only signed node-to-node calls").Write(w)
				return
			}
			rt.Handle(w, r, c)
		}))
	}
	return mux
}

// nodeOnly refuses every caller but a node; it reports whether it did.
func nodeOnly(w http.ResponseWriter, c callerauth.Caller) bool {
	if c.AccountID == callerauth.NodeCaller {
		return false
	}
	apierror.New(apierror.GatewayRequired, "internal cluster routes take only node-to-node calls").Write(w)
	return true
}

func serveOp(st Backend, op string) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		if nodeOnly(w, c) {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				apierror.New(apierror.PayloadTooLarge, "a cluster request is limited to %d bytes", MaxBody).Write(w)
				return
			}
			apierror.New(apierror.MalformedRequest, "reading the body: %v", err).Write(w)
			return
		}
		ctx := r.Context()
		if ms, err := strconv.ParseInt(r.Header.Get(HeaderTimeout), 10, 64); err == nil && ms > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(ms)*time.Millisecond)
			defer cancel()
		}
		ans, err := st.Serve(ctx, op, body)
		switch {
		case err == nil:
		case errors.Is(err, store.ErrBadRequest):
			apierror.New(apierror.InvalidJSON, "%v", err).Write(w)
			return
		case errors.Is(err, store.ErrUnknownOp):
			apierror.New(apierror.NotFound, "%v", err).Write(w)
			return
		default:
			apierror.Respond(w, nil, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(ans)
	}
}

// Member is one node in GET Prefix's answer.
type Member struct {
	ID string `json:"id"`
	// Raft is the node's raft address; "" if it is not in the raft
	// configuration (registered, but not joined or already removed).
	Raft string `json:"raft"`
	// API is the node's API address from the registry; "" if the node has
	// not registered.
	API   string `json:"api"`
	Voter bool   `json:"voter"`
	// State is the registry's status (alive, left, failed), or
	// "unregistered" for a raft member the registry does not know.
	State string `json:"state"`
}

// Members is GET Prefix's answer: the cell as the serving node sees it.
type Members struct {
	Leader string   `json:"leader"`
	Nodes  []Member `json:"nodes"`
}

// View is the cell as st sees it: raft's configuration joined with the
// registry, raft members first in raft's order, then registered nodes
// outside it.
func View(st Backend) (Members, error) {
	srvs, err := st.Servers()
	if err != nil {
		return Members{}, err
	}
	reg := map[string]store.NodeInfo{}
	for _, n := range st.Nodes() {
		reg[n.ID] = n
	}
	out := Members{Leader: st.LeaderID(), Nodes: []Member{}}
	seen := map[string]bool{}
	for _, s := range srvs {
		m := Member{ID: s.ID, Raft: s.Addr, Voter: s.Voter, State: "unregistered"}
		if n, ok := reg[s.ID]; ok {
			m.API, m.State = n.APIAddr, status(n)
		}
		seen[s.ID] = true
		out.Nodes = append(out.Nodes, m)
	}
	for _, n := range st.Nodes() {
		if !seen[n.ID] {
			out.Nodes = append(out.Nodes, Member{ID: n.ID, API: n.APIAddr, State: status(n)})
		}
	}
	return out, nil
}

func status(n store.NodeInfo) string {
	if n.Status == "" {
		return string(store.NodeAlive)
	}
	return string(n.Status)
}

func members(st Backend) api.CallerHandler {
	return func(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
		if nodeOnly(w, c) {
			return
		}
		m, err := View(st)
		if err != nil {
			apierror.Respond(w, nil, fmt.Errorf("cluster: members: %w", err))
			return
		}
		api.WriteJSON(w, http.StatusOK, m)
	}
}
