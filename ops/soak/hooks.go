package soak

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// hooks is a webhook receiver on loopback that checks every delivery's
// signature the way docs/webhooks.md tells users to, from the API keys
// alone.
type hooks struct {
	srv  *http.Server
	ln   net.Listener
	keys []string

	mu        sync.Mutex
	delivered map[string]int // token -> deliveries accepted
	badSig    int
	arrived   chan struct{}
}

func startHooks(keys []string) (*hooks, error) {
	// Loopback only: the soak never makes the service reach anywhere else.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("soak: webhook receiver: %w", err)
	}
	h := &hooks{ln: ln, keys: keys, delivered: map[string]int{}, arrived: make(chan struct{}, 1)}
	h.srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

func (h *hooks) url(n int) string { return fmt.Sprintf("http://%s/hook/%d", h.ln.Addr(), n) }

func (h *hooks) close() { _ = h.srv.Close() }

func signature(apiKey string, body []byte) string {
	m := hmac.New(sha256.New, []byte(apiKey))
	m.Write([]byte("sandboxapi-webhook-v1"))
	secret := hex.EncodeToString(m.Sum(nil))
	m = hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

func (h *hooks) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	ok := false
	for _, k := range h.keys {
		if hmac.Equal([]byte(r.Header.Get("X-SandboxAPI-Signature")), []byte(signature(k, body))) {
			ok = true
		}
	}
	var m struct {
		Token string `json:"token"`
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Method != http.MethodPut || !ok || json.Unmarshal(body, &m) != nil || m.Token == "" {
		h.badSig++
		http.Error(w, "bad delivery", http.StatusUnauthorized)
		return
	}
	h.delivered[m.Token]++
	w.WriteHeader(http.StatusNoContent)
	select {
	case h.arrived <- struct{}{}:
	default:
	}
}

// wait waits until every token has been delivered, at most max, and
// returns the ones that were not.
func (h *hooks) wait(tokens []string, max time.Duration) []string {
	deadline := time.After(max)
	for {
		var missing []string
		h.mu.Lock()
		for _, t := range tokens {
			if h.delivered[t] == 0 {
				missing = append(missing, t)
			}
		}
		h.mu.Unlock()
		if len(missing) == 0 {
			return nil
		}
		select {
		case <-h.arrived:
		case <-time.After(500 * time.Millisecond):
		case <-deadline:
			return missing
		}
	}
}
