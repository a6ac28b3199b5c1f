package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

const testKey = "sk_test"

// remote is an in-process go-sdk Streamable HTTP server that refuses
// requests without the Bearer key, and records the requests it got.
type remote struct {
	url string

	mu        sync.Mutex
	requests  []request
	waiting   chan struct{} // the wait tool has started
	cancelled chan struct{} // the wait tool was cancelled
}

// request is what the remote saw of a request.
type request struct {
	HTTPMethod string
	Key        bool   // it carried the Bearer key
	Version    string // its Mcp-Protocol-Version
	Method     string // a POST's JSON-RPC method ("" for a response)
}

func (r *remote) seen() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

func newRemote(t *testing.T) *remote {
	t.Helper()
	r := &remote{waiting: make(chan struct{}), cancelled: make(chan struct{})}
	server := mcp.NewServer(&mcp.Implementation{Name: "remote", Version: "1.0.0"}, nil)
	type countArgs struct {
		N int `json:"n"`
	}
	mcp.AddTool(server, &mcp.Tool{Name: "count", Description: "reports progress up to n"},
		func(ctx context.Context, req *mcp.CallToolRequest, in countArgs) (*mcp.CallToolResult, any, error) {
			for i := 1; i <= in.N; i++ {
				err := req.Session.NotifyProgress(ctx, &mcp.ProgressNotificationParams{
					ProgressToken: req.Params.GetProgressToken(), Progress: float64(i), Total: float64(in.N),
				})
				if err != nil {
					return nil, nil, err
				}
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "counted"}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "roots", Description: "asks the client for its roots"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			res, err := req.Session.ListRoots(ctx, nil)
			if err != nil {
				return nil, nil, err
			}
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: res.Roots[0].URI}}}, nil, nil
		})
	mcp.AddTool(server, &mcp.Tool{Name: "wait", Description: "waits to be cancelled"},
		func(ctx context.Context, req *mcp.CallToolRequest, _ struct{}) (*mcp.CallToolResult, any, error) {
			close(r.waiting)
			select {
			case <-ctx.Done():
				close(r.cancelled)
				return nil, nil, ctx.Err()
			case <-time.After(30 * time.Second):
				return nil, nil, errors.New("never cancelled")
			}
		})
	handler := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		seen := request{
			HTTPMethod: req.Method,
			Key:        req.Header.Get("Authorization") == "Bearer "+testKey,
			Version:    req.Header.Get("Mcp-Protocol-Version"),
		}
		if req.Method == http.MethodPost {
			body, _ := io.ReadAll(req.Body)
			var m struct{ Method string }
			json.Unmarshal(body, &m)
			seen.Method = m.Method
			req.Body = io.NopCloser(bytes.NewReader(body))
		}
		r.mu.Lock()
		r.requests = append(r.requests, seen)
		r.mu.Unlock()
		if !seen.Key {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		handler.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/mcp"
	return r
}

// pipes are a stdio pair: the client's side of the bridge's stdin and
// stdout, and the bridge's.
func pipes() (client, bridge *mcp.IOTransport) {
	toBridge, fromClient := io.Pipe()
	toClient, fromBridge := io.Pipe()
	return &mcp.IOTransport{Reader: toClient, Writer: fromClient},
		&mcp.IOTransport{Reader: toBridge, Writer: fromBridge}
}

// start runs the bridge with key to r; its error arrives on the channel.
func start(t *testing.T, r *remote, key string) (client *mcp.IOTransport, done <-chan error) {
	t.Helper()
	client, local := pipes()
	errc := make(chan error, 1)
	go func() { errc <- Run(context.Background(), local, Options{URL: r.url, Key: key, Logger: testLogger(t)}) }()
	return client, errc
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("the bridge did not end")
		return nil
	}
}

func TestBridge(t *testing.T) {
	r := newRemote(t)
	transport, done := start(t, r, testKey)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var mu sync.Mutex
	var progress []float64
	client := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1.0.0"}, &mcp.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *mcp.ProgressNotificationClientRequest) {
			mu.Lock()
			progress = append(progress, req.Params.Progress)
			mu.Unlock()
		},
	})
	client.AddRoots(&mcp.Root{URI: "file:///work"})
	session, err := client.Connect(ctx, transport, nil)
	if err != nil {
		t.Fatalf("connecting through the bridge: %v", err)
	}
	version := session.InitializeResult().ProtocolVersion

	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	var names []string
	for _, tool := range tools.Tools {
		names = append(names, tool.Name)
	}
	if slices.Sort(names); !slices.Equal(names, []string{"count", "roots", "wait"}) {
		t.Errorf("tools/list through the bridge: %v", names)
	}

	params := &mcp.CallToolParams{Name: "count", Arguments: map[string]any{"n": 3}}
	params.SetProgressToken("tok")
	res, err := session.CallTool(ctx, params)
	if err != nil {
		t.Fatalf("tools/call count: %v", err)
	}
	if text := res.Content[0].(*mcp.TextContent).Text; text != "counted" || res.IsError {
		t.Errorf("tools/call count: %q (error %v)", text, res.IsError)
	}
	// The client's handler may run after the call's answer is in.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		got := slices.Clone(progress)
		mu.Unlock()
		if slices.Equal(got, []float64{1, 2, 3}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress notifications: %v, want [1 2 3]", got)
		}
	}

	// A request of the server's own, made while it handles a call.
	res, err = session.CallTool(ctx, &mcp.CallToolParams{Name: "roots"})
	if err != nil || res.IsError {
		t.Fatalf("tools/call roots: %v %v", err, res)
	}
	if text := res.Content[0].(*mcp.TextContent).Text; text != "file:///work" {
		t.Errorf("roots/list from the server through the bridge: %q", text)
	}

	// notifications/cancelled reaches the server.
	callCtx, cancelCall := context.WithCancel(ctx)
	called := make(chan error, 1)
	go func() {
		_, err := session.CallTool(callCtx, &mcp.CallToolParams{Name: "wait"})
		called <- err
	}()
	select {
	case <-r.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the wait tool did not start")
	}
	cancelCall()
	select {
	case <-r.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's handler was not cancelled")
	}
	if err := <-called; !errors.Is(err, context.Canceled) {
		t.Errorf("the cancelled call: %v", err)
	}
	if err := session.Ping(ctx, nil); err != nil {
		t.Errorf("ping after a cancelled call: %v", err)
	}

	// Closing the client's side ends the remote session and the bridge.
	if err := session.Close(); err != nil {
		t.Fatalf("closing the client: %v", err)
	}
	if err := wait(t, done); err != nil {
		t.Fatalf("the bridge ended with %v, want nil when the client closes", err)
	}

	// Every request had the key; every one after initialize, the
	// negotiated version; the last was the session's DELETE.
	seen := r.seen()
	initialized := false
	for i, req := range seen {
		if !req.Key {
			t.Errorf("request %d (%+v) came without the key", i, req)
		}
		if initialized && req.Version != version {
			t.Errorf("request %d (%+v) after initialize: want Mcp-Protocol-Version %s", i, req, version)
		}
		initialized = initialized || req.Method == "initialize"
	}
	if !initialized {
		t.Errorf("the server saw no initialize: %+v", seen)
	}
	if len(seen) == 0 || seen[len(seen)-1].HTTPMethod != http.MethodDelete {
		t.Errorf("the last request was not the session's DELETE: %+v", seen)
	}
}

// A 401 ends the bridge with ErrUnauthorized, after answering the call
// that got it with the error. The SDK's client starts with server/discover
// (and the bridge is gone by its fallback to initialize); one that speaks
// 2025-11-25, as Claude Desktop does, starts with initialize.
func TestUnauthorized(t *testing.T) {
	for _, tc := range []struct {
		key, version, first string
	}{
		{"", "", "server/discover"},
		{"sk_wrong", "", "server/discover"},
		{"sk_wrong", "2025-11-25", "initialize"},
	} {
		r := newRemote(t)
		transport, done := start(t, r, tc.key)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		client := mcp.NewClient(&mcp.Implementation{Name: "test-client", Version: "1.0.0"}, nil)
		_, err := client.Connect(ctx, transport, &mcp.ClientSessionOptions{ProtocolVersion: tc.version})
		cancel()
		if err == nil || (tc.first == "initialize" && !strings.Contains(err.Error(), "Unauthorized")) {
			t.Errorf("key %q: the client's connect ended with %v, want the server's Unauthorized", tc.key, err)
		}
		if err := wait(t, done); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("key %q: the bridge ended with %v, want ErrUnauthorized", tc.key, err)
		}
		if seen := r.seen(); len(seen) != 1 || seen[0].Key || seen[0].Method != tc.first {
			t.Errorf("key %q: the server got %+v, want one %s without the key", tc.key, seen, tc.first)
		}
	}
}

// The key goes to the endpoint's origin only, not to where a redirect
// points.
func TestKeyStaysOnOrigin(t *testing.T) {
	var mu sync.Mutex
	var atFront, atOther []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		atOther = append(atOther, req.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer other.Close()
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		atFront = append(atFront, req.Header.Get("Authorization"))
		mu.Unlock()
		http.Redirect(w, req, other.URL+"/mcp", http.StatusTemporaryRedirect)
	}))
	defer front.Close()

	transport, local := pipes()
	done := make(chan error, 1)
	go func() {
		done <- Run(context.Background(), local, Options{URL: front.URL + "/mcp", Key: testKey, Logger: testLogger(t)})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := mcp.NewClient(&mcp.Implementation{Name: "c", Version: "1"}, nil).Connect(ctx, transport, nil); err == nil {
		t.Fatal("initialize succeeded against a server that only redirects")
	}
	wait(t, done) // with the remote's failure or the client's close, whichever came first
	mu.Lock()
	defer mu.Unlock()
	if len(atFront) == 0 || len(atOther) != len(atFront) {
		t.Fatalf("requests at the endpoint %q, after its redirects %q: want as many", atFront, atOther)
	}
	for i := range atFront {
		if atFront[i] != "Bearer "+testKey || atOther[i] != "" {
			t.Errorf("Authorization at the endpoint %q, after its redirect %q: want the key, then none", atFront[i], atOther[i])
		}
	}
}

// testLogger writes the bridge's logs to the test's log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLog{t}, nil))
}

type tLog struct{ t *testing.T }

func (w tLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
