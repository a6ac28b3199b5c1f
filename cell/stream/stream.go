// Package stream answers execution requests with server-sent events while
// the program runs: a stdout or stderr event for each piece of output as the
// sandbox produces it, then one result event with the whole result, or an
// error event if the execution could not finish. Every door's stream
// route (package dialect) and session streams use a Writer.
//
// Event data is JSON. Output events are {"data": "..."}, the output as
// text (base64 when the request set base64_encoded), so no newline or
// carriage return is lost to SSE framing; a multi-byte character is never
// split between two events. The result event is the response body the
// non-streaming endpoint would have sent; the error event is the error
// body it would have sent.
//
// Every event has an ID (the execution's ID and a sequence number). A
// stream cannot be resumed: the program it came from is gone. So a request
// carrying Last-Event-ID, which is how EventSource clients reconnect after a
// stream ends or breaks, is answered 204 No Content (see Reconnect), which
// tells them to stop instead of running the program again.
package stream

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	sse "github.com/tmaxmax/go-sse"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// Event types.
const (
	EventStdout = "stdout"
	EventStderr = "stderr"
	EventResult = "result"
	EventError  = "error"
)

// Defaults of Options.
const (
	// DefaultOpenAfter: a stream with no event yet sends its headers this
	// long after it began, so a client learns the request was accepted
	// while the program waits for a sandbox or prints nothing.
	DefaultOpenAfter = 2 * time.Second
	// DefaultKeepAlive: an open stream with nothing to say sends an SSE
	// comment this often, so idle proxies do not cut it.
	DefaultKeepAlive = 15 * time.Second
)

// Options shape a Writer. Zero values take the defaults.
type Options struct {
	// ID is the execution's ID, which event IDs start with.
	ID string
	// Base64 sends output events' data in base64 (base64_encoded).
	Base64    bool
	OpenAfter time.Duration
	KeepAlive time.Duration
}

// Writer is one response's event stream. Output may be called from any
// goroutine and never blocks on the client: events queue (bounded by the
// executor's output cap) and a pump goroutine writes them. Nothing is sent
// until the first event or OpenAfter, so a request refused before then can
// still be answered with a plain JSON error (see Fail).
//
// The gateway counts an execution when the cell says one ran
// (callerauth.HeaderExecutions). A stream that opens with output or a
// result carries that header; one that opened before the program said
// anything announces it as a trailer and sets it at the end if the
// program ran. The bytes a networked run moved through the egress proxy
// (callerauth.HeaderEgressBytes, SetEgressBytes) are known only at its
// end, so every stream announces them as a trailer.
type Writer struct {
	rw   http.ResponseWriter
	sess *sse.Session
	opt  Options

	mu       sync.Mutex
	queue    []*sse.Message
	ran      bool // output or a result was queued: the program ran
	terminal bool // the result or error event was queued
	opened   bool // the headers went out
	refused  bool // Fail answered before opening: never open
	carry    map[string][]byte
	seq      int
	egress   int64 // SetEgressBytes's, sent as a trailer with the result

	wake chan struct{}
	done chan struct{}
}

// New starts a stream on w for r. End it with exactly one of Result, Fail
// or Abandon. It fails only when w cannot flush, which no net/http server
// writer does.
func New(w http.ResponseWriter, r *http.Request, opt Options) (*Writer, error) {
	sess, err := sse.Upgrade(w, r)
	if err != nil {
		return nil, err
	}
	if opt.OpenAfter <= 0 {
		opt.OpenAfter = DefaultOpenAfter
	}
	if opt.KeepAlive <= 0 {
		opt.KeepAlive = DefaultKeepAlive
	}
	s := &Writer{rw: w, sess: sess, opt: opt, carry: map[string][]byte{},
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.pump()
	return s, nil
}

// Output queues a piece of a stream's output ("stdout" or "stderr"); it has
// the signature of executor.Request.OnOutput.
func (s *Writer) Output(stream string, chunk []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.terminal || s.refused {
		return
	}
	s.ran = true
	data := chunk
	if !s.opt.Base64 {
		data, s.carry[stream] = splitUTF8(append(s.carry[stream], chunk...))
	}
	if len(data) > 0 {
		s.queue = append(s.queue, s.outputEvent(stream, data))
	}
	s.kick()
}

// SetEgressBytes records the bytes the run moved through the egress proxy,
// for the gateway's usage ledger: the trailer after the result event says
// them. Call it before Result.
func (s *Writer) SetEgressBytes(n int64) {
	s.mu.Lock()
	s.egress = n
	s.mu.Unlock()
}

// Result ends the stream with the result event (v as JSON) and waits until
// it is written or the client is gone.
func (s *Writer) Result(v any) {
	s.mu.Lock()
	s.ran = true
	s.end(EventResult, v)
	s.mu.Unlock()
	<-s.done
}

// Fail ends the stream with an error. If nothing has been sent or queued
// yet it sends nothing and returns false: the caller answers with an
// ordinary error and status. Otherwise the error goes out, after the
// output, as an error event (body as JSON) and Fail returns true once it
// is written.
func (s *Writer) Fail(body any) bool {
	s.mu.Lock()
	if !s.opened && !s.ran {
		s.refused = true
		s.queue = nil
		s.kick()
		s.mu.Unlock()
		<-s.done
		return false
	}
	s.end(EventError, body)
	s.mu.Unlock()
	<-s.done
	return true
}

// Abandon stops the stream without a terminal event, for a client that
// has gone away.
func (s *Writer) Abandon() {
	s.mu.Lock()
	s.refused, s.terminal, s.queue = true, true, nil
	s.kick()
	s.mu.Unlock()
	<-s.done
}

// end queues the held-back output and the terminal event. mu is held.
func (s *Writer) end(event string, v any) {
	if s.terminal || s.refused {
		return
	}
	for _, stream := range []string{EventStdout, EventStderr} {
		if rest := s.carry[stream]; len(rest) > 0 {
			// Bytes that never became a whole character: sent as they
			// are (JSON turns them into U+FFFD).
			s.queue = append(s.queue, s.outputEvent(stream, rest))
			delete(s.carry, stream)
		}
	}
	s.queue = append(s.queue, s.jsonEvent(event, v))
	s.terminal = true
	s.kick()
}

func (s *Writer) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Writer) outputEvent(stream string, data []byte) *sse.Message {
	text := string(data)
	if s.opt.Base64 {
		text = base64.StdEncoding.EncodeToString(data)
	}
	return s.jsonEvent(stream, struct {
		Data string `json:"data"`
	}{text})
}

// jsonEvent is the next event. mu is held.
func (s *Writer) jsonEvent(event string, v any) *sse.Message {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(apierror.New(apierror.Internal, "the result could not be encoded").Body())
		event = EventError
	}
	s.seq++
	m := &sse.Message{Type: sse.Type(event)}
	if id, err := sse.NewID(s.opt.ID + ":" + strconv.Itoa(s.seq)); err == nil {
		m.ID = id
	}
	m.AppendData(string(b))
	return m
}

// Reconnect reports whether r is an EventSource reconnecting to a stream
// (it carries Last-Event-ID). Answer it with 204 No Content: streams cannot
// be resumed, and running the request again would run its program twice.
func Reconnect(r *http.Request) bool {
	return r.Header.Get("Last-Event-ID") != ""
}

// pump writes queued events until the terminal one is written, the stream
// is refused or abandoned, or the client stops reading.
func (s *Writer) pump() {
	defer close(s.done)
	openTimer := time.NewTimer(s.opt.OpenAfter)
	defer openTimer.Stop()
	keepAlive := time.NewTicker(s.opt.KeepAlive)
	defer keepAlive.Stop()
	counted := false
	for {
		ping := false
		select {
		case <-s.wake:
		case <-openTimer.C:
			ping = true
		case <-keepAlive.C:
			ping = true
		}
		s.mu.Lock()
		if s.refused {
			s.mu.Unlock()
			return
		}
		batch, terminal, ran, egress := s.queue, s.terminal, s.ran, s.egress
		s.queue = nil
		if !s.opened && (len(batch) > 0 || ping) {
			s.open(ran)
			counted = ran
		}
		opened := s.opened
		s.mu.Unlock()
		if !opened {
			continue
		}
		if len(batch) == 0 && ping {
			m := &sse.Message{}
			m.AppendComment("keep-alive")
			batch = append(batch, m)
		}
		for _, m := range batch {
			if err := s.sess.Send(m); err != nil {
				return // the client is gone; its request's context ends the run
			}
		}
		if terminal && !counted && ran {
			// Announced as a trailer when the stream opened.
			s.rw.Header().Set(callerauth.HeaderExecutions, "1")
		}
		if terminal && egress > 0 {
			s.rw.Header().Set(callerauth.HeaderEgressBytes, strconv.FormatInt(egress, 10))
		}
		if err := s.sess.Flush(); err != nil || terminal {
			return
		}
	}
}

// open sets the headers that go out with the first event. mu is held.
func (s *Writer) open(ran bool) {
	h := s.rw.Header()
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx and friends: do not buffer
	if ran {
		h.Set(callerauth.HeaderExecutions, "1")
	} else {
		h.Add("Trailer", callerauth.HeaderExecutions)
	}
	h.Add("Trailer", callerauth.HeaderEgressBytes)
	s.opened = true
}

// splitUTF8 splits b before a trailing incomplete UTF-8 sequence, which
// the next piece of output completes.
func splitUTF8(b []byte) (complete, rest []byte) {
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if b[i] < utf8.RuneSelf {
			break
		}
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return b[:i], append([]byte(nil), b[i:]...)
			}
			break
		}
	}
	return b, nil
}
