// Package openapitest holds the service to its OpenAPI document: a
// Checker validates the requests a test makes and the answers it gets
// against cell/openapi's document, with pb33f's libopenapi-validator.
//
// What counts as a violation:
//   - an answer that does not match the document's for its operation and
//     status (every answer, refusals included: their error bodies are part
//     of the contract);
//   - a request the service accepted (2xx) that the document says is
//     invalid: either the document is wrong or the service is lax;
//   - an answer other than 404 for a path the document does not name:
//     a route served but not documented.
//
// A test's own bad requests, answered 4xx, are not violations. Event
// streams are checked for their status and content type, not their
// events (package stream's tests hold those).
package openapitest

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"

	"github.com/sandboxapi/sandboxapi/cell/openapi"
)

// maxChecked is the largest body the checker reads into memory to
// validate; larger ones (the hostile suite's bombs) pass unchecked.
const maxChecked = 4 << 20

// Checker validates traffic against the document. Its methods may be
// called from any goroutine.
type Checker struct {
	v     validator.Validator
	model *v3.Document

	mu         sync.Mutex
	bases      map[string]bool // scheme://host of the servers checked
	violations map[string][]string
	seen       map[string]int // "METHOD /template" -> answers checked
}

// New is a Checker for the document of cell/openapi.
func New() (*Checker, error) {
	doc, err := libopenapi.NewDocument(openapi.JSON())
	if err != nil {
		return nil, fmt.Errorf("openapitest: %w", err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		return nil, fmt.Errorf("openapitest: building the model: %w", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		return nil, fmt.Errorf("openapitest: %w", errs[0])
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		return nil, fmt.Errorf("openapitest: the document is not valid OpenAPI: %v", verrs)
	}
	return &Checker{v: v, model: &model.Model, bases: map[string]bool{},
		violations: map[string][]string{}, seen: map[string]int{}}, nil
}

// Watch checks the traffic to base (scheme://host:port) from now on.
func (c *Checker) Watch(base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bases[strings.TrimSuffix(base, "/")] = true
}

// Violations are those recorded for base, taken: a second call answers
// only newer ones.
func (c *Checker) Violations(base string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	base = strings.TrimSuffix(base, "/")
	v := c.violations[base]
	delete(c.violations, base)
	return v
}

// Unexercised are the document's operations no checked answer came from,
// sorted.
func (c *Checker) Unexercised() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for path, item := range c.model.Paths.PathItems.FromOldest() {
		for method := range item.GetOperations().FromOldest() {
			op := strings.ToUpper(method) + " " + path
			if c.seen[op] == 0 {
				out = append(out, op)
			}
		}
	}
	slices.Sort(out)
	return out
}

// Transport checks the traffic that goes through next to a watched base.
func (c *Checker) Transport(next http.RoundTripper) http.RoundTripper {
	return roundTripper{c: c, next: next}
}

type roundTripper struct {
	c    *Checker
	next http.RoundTripper
}

func (rt roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	base := r.URL.Scheme + "://" + r.URL.Host
	rt.c.mu.Lock()
	watched := rt.c.bases[base]
	rt.c.mu.Unlock()
	if !watched || r.URL.Path == "" {
		return rt.next.RoundTrip(r)
	}
	var reqBody []byte
	if r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength < 0 || r.ContentLength > maxChecked || r.GetBody == nil {
			// Streamed or large bodies (slow-client and bomb tests) go
			// through as they are.
			return rt.next.RoundTrip(r)
		}
		body, err := r.GetBody()
		if err != nil {
			return rt.next.RoundTrip(r)
		}
		reqBody, err = io.ReadAll(body)
		body.Close()
		if err != nil {
			return rt.next.RoundTrip(r)
		}
	}
	resp, err := rt.next.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		rt.c.check(base, r, reqBody, resp, nil)
		return resp, nil
	}
	resp.Body = &recordingBody{ReadCloser: resp.Body, empty: resp.ContentLength == 0, done: func(body []byte, complete bool) {
		if complete {
			rt.c.check(base, r, reqBody, resp, body)
		}
	}}
	return resp, nil
}

// recordingBody keeps what the test reads of an answer and calls done
// once, at EOF or Close, saying whether it saw the whole body.
type recordingBody struct {
	io.ReadCloser
	empty    bool // the answer said it has no body
	buf      bytes.Buffer
	tooLarge bool
	once     sync.Once
	done     func(body []byte, complete bool)
}

func (b *recordingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if !b.tooLarge {
		if b.buf.Len()+n > maxChecked {
			b.tooLarge = true
		} else {
			b.buf.Write(p[:n])
		}
	}
	if err == io.EOF {
		b.once.Do(func() { b.done(b.buf.Bytes(), !b.tooLarge) })
	}
	return n, err
}

func (b *recordingBody) Close() error {
	// A body closed before EOF is checked only if the answer said it had
	// none (a 204); otherwise the test did not read it all.
	b.once.Do(func() { b.done(nil, b.empty) })
	return b.ReadCloser.Close()
}

func (c *Checker) check(base string, r *http.Request, reqBody []byte, resp *http.Response, respBody []byte) {
	req := r.Clone(r.Context())
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	item, _, template := paths.FindPath(req, c.model, nil)
	what := r.Method + " " + r.URL.RequestURI()
	if item == nil {
		if resp.StatusCode != http.StatusNotFound {
			c.record(base, fmt.Sprintf("%s: answered %d, but the document has no such path", what, resp.StatusCode))
		}
		return
	}
	op := r.Method + " " + template
	if item.GetOperations().GetOrZero(strings.ToLower(r.Method)) == nil {
		if resp.StatusCode != http.StatusMethodNotAllowed && resp.StatusCode != http.StatusNotFound {
			c.record(base, fmt.Sprintf("%s: answered %d, but the document has no %s on %s", what, resp.StatusCode, r.Method, template))
		}
		return
	}
	c.mu.Lock()
	c.seen[op]++
	c.mu.Unlock()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if errs := c.ValidateRequest(req, item); len(errs) > 0 {
			c.record(base, fmt.Sprintf("%s: the request was accepted (%d) but the document refuses it: %s\n  body: %.300s",
				what, resp.StatusCode, describe(errs), reqBody))
		}
	}
	checked := *resp
	if respBody != nil {
		checked.Body = io.NopCloser(bytes.NewReader(respBody))
	} else {
		checked.Body = http.NoBody
	}
	req.Body = io.NopCloser(bytes.NewReader(reqBody))
	if ok, errs := c.v.ValidateHttpResponse(req, &checked); !ok {
		c.record(base, fmt.Sprintf("%s: the %d answer does not match the document: %s\n  body: %.300s",
			what, resp.StatusCode, describe(errs), respBody))
	}
}

// ValidateRequest validates r (whose body it reads) against the
// document's operation for it, item its path's (nil: found here). The
// service reads a JSON body whatever its Content-Type (curl's -d sends
// application/x-www-form-urlencoded), so an operation that takes JSON
// has r's body validated as JSON.
func (c *Checker) ValidateRequest(r *http.Request, item *v3.PathItem) []error {
	if item == nil {
		var errs []*errors.ValidationError
		if item, errs, _ = paths.FindPath(r, c.model, nil); item == nil {
			return asErrors(errs)
		}
	}
	if op := item.GetOperations().GetOrZero(strings.ToLower(r.Method)); op != nil && op.RequestBody != nil {
		_, takesJSON := op.RequestBody.Content.Get("application/json")
		_, takesAny := op.RequestBody.Content.Get("*/*")
		switch ct := r.Header.Get("Content-Type"); {
		case takesJSON && !strings.Contains(ct, "json"):
			r = r.Clone(r.Context())
			r.Header.Set("Content-Type", "application/json")
		case takesAny && ct == "":
			r = r.Clone(r.Context())
			r.Header.Set("Content-Type", "application/octet-stream")
		}
	}
	_, errs := c.v.ValidateHttpRequest(r)
	return asErrors(errs)
}

func asErrors(errs []*errors.ValidationError) []error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

func (c *Checker) record(base, v string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.violations[base] = append(c.violations[base], v)
}

func describe[E error](errs []E) string {
	var b strings.Builder
	for i, e := range errs {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}
