package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// headerCall names, on a request the gateway sent to /mcp, the meter that
// counts what its tool calls run. It carries the internal prefix, so a
// client cannot send one: the gateway strips those.
const headerCall = callerauth.Prefix + "Mcp-Call"

// meters are the executions counted for each /mcp request in flight,
// by headerCall. A tool call finds its request's by the header the SDK
// hands it (CallToolRequest.Extra.Header).
type meters struct {
	mu   sync.Mutex
	next uint64
	by   map[string]*atomic.Int64
}

func (m *meters) open() (string, *atomic.Int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	id := strconv.FormatUint(m.next, 10)
	if m.by == nil {
		m.by = map[string]*atomic.Int64{}
	}
	n := new(atomic.Int64)
	m.by[id] = n
	return id, n
}

func (m *meters) close(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.by, id)
}

func (m *meters) add(h http.Header, n int64) {
	m.mu.Lock()
	c := m.by[h.Get(headerCall)]
	m.mu.Unlock()
	if c != nil {
		c.Add(n)
	}
}

// reply is what the node's REST API answered a tool's request.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// apiError is the API's error body, {"error":{"code","message"}}.
type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// failed returns the API's error in r, if r is one.
func (r reply) failed() (apiError, bool) {
	var e apiError
	if r.status < 400 {
		return e, false
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code == "" {
		e.Error.Code = "internal_error"
		e.Error.Message = fmt.Sprintf("the API answered HTTP %d: %s", r.status, strings.TrimSpace(string(r.body)))
	}
	return e, true
}

// recorder is the ResponseWriter a tool's in-process request is served
// into: the REST handlers write their answer once, whole.
type recorder struct {
	status int
	header http.Header
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// Flush is a no-op: nothing is sent before the handler returns.
func (r *recorder) Flush() {}

// forwarded are the headers of the /mcp request a tool's REST request
// carries: who the gateway said is calling (signed), and the request's id
// for the logs.
func forwarded(from http.Header) http.Header {
	h := http.Header{}
	for name, vv := range from {
		if strings.HasPrefix(name, callerauth.Prefix) || name == api.HeaderRequestID {
			h[name] = vv
		}
	}
	return h
}

// call serves method path with body on the node's API, as the caller of
// the /mcp request whose headers are from: the REST API's checks, plan
// limits, errors and capacity gate, exactly. The executions it reports go
// to that request's meter.
func (d *Door) call(ctx context.Context, from http.Header, method, path string, body any) (reply, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return reply{}, fmt.Errorf("mcp: encoding the request: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, path, bytes.NewReader(b))
	if err != nil {
		return reply{}, fmt.Errorf("mcp: %w", err)
	}
	req.Header = forwarded(from)
	req.Header.Set("Content-Type", "application/json")
	req.RemoteAddr = "mcp"
	rec := &recorder{header: http.Header{}}
	d.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if v := rec.header.Get(callerauth.HeaderExecutions); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
			d.meters.add(from, n)
		}
	}
	if err := ctx.Err(); err != nil {
		return reply{}, err
	}
	return reply{status: rec.status, header: rec.header, body: rec.body.Bytes()}, nil
}
