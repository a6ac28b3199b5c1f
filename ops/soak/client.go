package soak

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// worker is one of the soak's concurrent clients.
type worker struct {
	r   *runner
	id  int
	rnd *rand.Rand
}

func (r *runner) worker(i int) *worker {
	return &worker{r: r, id: i, rnd: rand.New(rand.NewPCG(r.cfg.Seed, uint64(i)+1))}
}

// loop starts scenarios until the run has sent its requests: the
// coverage tasks first, shared out between the workers, then a mix.
func (w *worker) loop(ctx context.Context) {
	for ctx.Err() == nil && w.r.sent.Load() < int64(w.r.cfg.Requests) {
		run := w.r.nextCoverage()
		if run == nil {
			run = pick(w.rnd).run
		}
		run(ctx, w, w.rnd.IntN(2))
		// Whichever worker passes the next mark of 500 says so, once.
		if mark := w.r.mark.Load(); w.r.sent.Load() >= mark+500 && w.r.mark.CompareAndSwap(mark, mark+500) {
			w.r.progress("%d requests sent", mark+500)
		}
	}
}

// answer is one HTTP answer, read whole.
type answer struct {
	code   int
	header http.Header
	body   []byte
	obj    map[string]any
	arr    []any
}

func (a *answer) str(k string) string {
	s, _ := a.obj[k].(string)
	return s
}

func (a *answer) errCode() string {
	e, _ := a.obj["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (a *answer) list() []map[string]any {
	var out []map[string]any
	for _, x := range a.arr {
		if m, ok := x.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the soak's own bodies always marshal
	}
	return b
}

func parseURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("soak: service URL %q: want http://HOST:PORT", raw)
	}
	return u, nil
}

// raw sends one request with key in X-API-Key (none when key is "") and
// reads the whole answer. It counts nothing.
func (w *worker) raw(ctx context.Context, key, method, path string, body []byte, hdr map[string]string) (*answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, w.r.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	// An empty value removes a header: unsandbox callers send their key
	// in Authorization only.
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := w.r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	a := &answer{code: resp.StatusCode, header: resp.Header, body: b}
	if len(b) > 0 && b[0] == '{' {
		_ = json.Unmarshal(b, &a.obj)
	} else if len(b) > 0 && b[0] == '[' {
		_ = json.Unmarshal(b, &a.arr)
	}
	return a, nil
}

// call sends one counted request of kind and checks its status is one of
// want. It answers ok only then; a capacity answer (429, 408, 503 with
// Retry-After) is counted as such and not ok, anything else unexpected is
// an error.
func (w *worker) call(ctx context.Context, kind, key, method, path string, body []byte, hdr map[string]string, want ...int) (*answer, bool) {
	w.r.sent.Add(1)
	start := time.Now()
	a, err := w.raw(ctx, key, method, path, body, hdr)
	ok, wait := w.observe(ctx, kind, a, err, time.Since(start), want)
	if wait > 0 {
		_ = sleep(ctx, wait)
	}
	return a, ok
}

// observe records one answer. It returns whether the status was wanted,
// and how long to wait before the next request when the service said
// to retry later (Retry-After, at most 5 s), so a soak at capacity does
// not hammer it.
func (w *worker) observe(ctx context.Context, kind string, a *answer, err error, took time.Duration, want []int) (bool, time.Duration) {
	r := w.r
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &r.report
	rep.Requests++
	ks := rep.Kinds[kind]
	if ks == nil {
		ks = &KindStats{Statuses: map[int]int{}}
		rep.Kinds[kind] = ks
	}
	ks.N++
	ks.Latency = append(ks.Latency, took)
	if err != nil {
		ks.Statuses[0]++
		if ctx.Err() == nil {
			w.errorLocked(ks, fmt.Sprintf("%s: %v", kind, err))
		}
		return false, 0
	}
	ks.Statuses[a.code]++
	if slices.Contains(want, a.code) {
		return true, 0
	}
	var wait time.Duration
	switch {
	case a.code == http.StatusServiceUnavailable && a.header.Get("Retry-After") != "":
		rep.Unavailable++
		wait = retryAfter(a)
	case a.code == http.StatusServiceUnavailable:
		rep.UnavailableNoRetry++
		w.sampleLocked(fmt.Sprintf("%s: 503 without Retry-After: %s", kind, snippet(a.body)))
	case a.code >= 500:
		rep.Server5xx++
		w.sampleLocked(fmt.Sprintf("%s: HTTP %d %s", kind, a.code, snippet(a.body)))
	case a.code == http.StatusTooManyRequests:
		rep.RateLimited++
		wait = retryAfter(a)
	case a.code == http.StatusRequestTimeout:
		rep.QueueTimeouts++
	default:
		w.errorLocked(ks, fmt.Sprintf("%s: HTTP %d, want %v: %s", kind, a.code, want, snippet(a.body)))
	}
	return false, wait
}

func retryAfter(a *answer) time.Duration {
	s, _ := strconv.Atoi(a.header.Get("Retry-After"))
	return time.Duration(min(max(s, 1), 5)) * time.Second
}

// fail records a wrong answer found in a body.
func (w *worker) fail(kind, format string, args ...any) {
	r := w.r
	r.mu.Lock()
	defer r.mu.Unlock()
	ks := r.report.Kinds[kind]
	if ks == nil {
		ks = &KindStats{Statuses: map[int]int{}}
		r.report.Kinds[kind] = ks
	}
	w.errorLocked(ks, kind+": "+fmt.Sprintf(format, args...))
}

func (w *worker) errorLocked(ks *KindStats, msg string) {
	ks.Errors++
	w.r.report.Errors++
	w.sampleLocked(msg)
}

func (w *worker) sampleLocked(msg string) {
	if len(w.r.report.ErrorSamples) < 20 {
		w.r.report.ErrorSamples = append(w.r.report.ErrorSamples, msg)
	}
}

func snippet(b []byte) string {
	if len(b) > 300 {
		return fmt.Sprintf("%q…", b[:300])
	}
	return fmt.Sprintf("%q", b)
}
