package e2b

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/filesystem"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// A directory watch is a process of the sandbox's (watch.py, inotify
// through python3's ctypes) run as its user, beside the user's commands:
// it sees what the user may see and no more, under the session's limits,
// and ends with its stream, its RemoveWatcher, or the sandbox.

//go:embed watch.py
var watchScript string

// Bounds of watches.
const (
	// MaxWatchers bounds a sandbox's polled watchers (CreateWatcher).
	MaxWatchers = 16
	// MaxWatcherEvents bounds the events a polled watcher holds between
	// two GetWatcherEvents; later ones are dropped, and the next answer
	// is an error saying so.
	MaxWatcherEvents = 10000
	// watchOutputBytes bounds what one watch reports in all: about half a
	// million events.
	watchOutputBytes = 64 << 20
)

// watchLifetime is how long a watch may run: the client's deadline for a
// stream, within the longest a sandbox lives.
func watchLifetime(ctx context.Context) time.Duration {
	d := time.Duration(sessions.MaxIdleTTL) * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, max(time.Until(dl), time.Second))
	}
	return d
}

// watchLine is one line watch.py prints.
type watchLine struct {
	Ready bool   `json:"ready"`
	Name  string `json:"name"`
	Type  string `json:"type"`
}

var watchEventTypes = map[string]filesystem.EventType{
	"create": filesystem.EventType_EVENT_TYPE_CREATE,
	"write":  filesystem.EventType_EVENT_TYPE_WRITE,
	"remove": filesystem.EventType_EVENT_TYPE_REMOVE,
	"rename": filesystem.EventType_EVENT_TYPE_RENAME,
	"chmod":  filesystem.EventType_EVENT_TYPE_CHMOD,
}

// startWatch starts a watch of dir and returns once its watches are in
// place; onEvent gets each event, in order, from the watch's own
// goroutine. A missing dir is NotFound, a file InvalidArgument, as envd
// answers.
func startWatch(ctx context.Context, sb sessions.Handle, dir string, recursive bool, lifetime time.Duration, onEvent func(*filesystem.FilesystemEvent)) (*executor.Process, error) {
	rec := "0"
	if recursive {
		rec = "1"
	}
	ready := make(chan struct{})
	var once sync.Once
	var partial []byte
	var stderr bytes.Buffer
	onOutput := func(stream string, chunk []byte) {
		if stream != "stdout" {
			if stderr.Len() < 4<<10 {
				stderr.Write(chunk)
			}
			return
		}
		partial = append(partial, chunk...)
		for {
			i := bytes.IndexByte(partial, '\n')
			if i < 0 {
				return
			}
			var l watchLine
			err := json.Unmarshal(partial[:i], &l)
			partial = partial[i+1:]
			switch {
			case err != nil:
			case l.Ready:
				once.Do(func() { close(ready) })
			case watchEventTypes[l.Type] != 0:
				onEvent(&filesystem.FilesystemEvent{Name: l.Name, Type: watchEventTypes[l.Type]})
			}
		}
	}
	run, err := sb.Start(ctx, executor.ProcessSpec{
		Argv:       []string{"/usr/bin/python3", "-I", "-S", "-c", watchScript, dir, rec},
		Limits:     executor.Limits{CPU: lifetime, Wall: lifetime, OutputBytes: watchOutputBytes},
		OnOutput:   onOutput,
		StreamOnly: true,
	}, false)
	if err != nil {
		return nil, err
	}
	select {
	case <-ready:
		return run, nil
	case <-ctx.Done():
		_ = run.Signal(context.WithoutCancel(ctx), 9)
		return nil, ctx.Err()
	case <-run.Done():
	}
	// It ended before its watches were in place: say why.
	res, err := run.Wait(ctx)
	if err != nil {
		return nil, err
	}
	msg := strings.TrimSpace(stderr.String())
	switch res.ExitCode {
	case exitNotFound:
		return nil, &errFS{kind: exitNotFound, message: msg}
	case exitNotDir:
		return nil, &errFS{kind: exitNotDir, message: msg}
	}
	return nil, fmt.Errorf("e2b: the watcher ended %s (exit %d): %s", res.End, res.ExitCode, msg)
}

// WatchDir streams a directory's events: a start once the watch is in
// place, then its events, with keepalives between, until the client
// leaves or its deadline comes.
func (f *filesystemService) WatchDir(ctx context.Context, req *connect.Request[filesystem.WatchDirRequest], stream *connect.ServerStream[filesystem.WatchDirResponse]) error {
	dir, err := f.s.rpcPath(req, req.Msg.GetPath())
	if err != nil {
		return err
	}
	events := make(chan *filesystem.FilesystemEvent, 256)
	run, err := startWatch(ctx, heldFrom(ctx).sb, dir, req.Msg.GetRecursive(), watchLifetime(ctx), func(ev *filesystem.FilesystemEvent) {
		select {
		case events <- ev:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return f.s.rpcError(err)
	}
	defer func() { _ = run.Signal(context.WithoutCancel(ctx), 9) }()
	if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Start{Start: &filesystem.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	every := DefaultKeepalive
	if n, err := strconv.Atoi(req.Header().Get("Keepalive-Ping-Interval")); err == nil && n > 0 {
		every = time.Duration(min(n, 3600)) * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case ev := <-events:
			if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Filesystem{Filesystem: ev}}); err != nil {
				return err
			}
		case <-tick.C:
			if err := stream.Send(&filesystem.WatchDirResponse{Event: &filesystem.WatchDirResponse_Keepalive{Keepalive: &filesystem.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case <-run.Done():
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

// polledWatch is a watcher CreateWatcher made: its events wait for
// GetWatcherEvents.
type polledWatch struct {
	run *executor.Process

	mu      sync.Mutex
	events  []*filesystem.FilesystemEvent
	dropped int
}

// watchers are a sandbox's polled watchers, by id.
type watchers struct {
	mu   sync.Mutex
	byID map[string]*polledWatch
}

// CreateWatcher starts a watch whose events are fetched with
// GetWatcherEvents until RemoveWatcher (or the sandbox's end).
func (f *filesystemService) CreateWatcher(ctx context.Context, req *connect.Request[filesystem.CreateWatcherRequest]) (*connect.Response[filesystem.CreateWatcherResponse], error) {
	dir, err := f.s.rpcPath(req, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	h := heldFrom(ctx)
	ws := &boxOf(h.sb).watchers
	ws.mu.Lock()
	n := len(ws.byID)
	ws.mu.Unlock()
	if n >= MaxWatchers {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("a sandbox may have %d watchers; remove one first", MaxWatchers))
	}
	w := &polledWatch{}
	run, err := startWatch(ctx, h.sb, dir, req.Msg.GetRecursive(), watchLifetime(context.WithoutCancel(ctx)), func(ev *filesystem.FilesystemEvent) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(w.events) >= MaxWatcherEvents {
			w.dropped++
			return
		}
		w.events = append(w.events, ev)
	})
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	w.run = run
	id := newWatcherID()
	ws.mu.Lock()
	if ws.byID == nil {
		ws.byID = map[string]*polledWatch{}
	}
	ws.byID[id] = w
	ws.mu.Unlock()
	return connect.NewResponse(&filesystem.CreateWatcherResponse{WatcherId: id}), nil
}

func (ws *watchers) find(id string) (*polledWatch, error) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w, ok := ws.byID[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("watcher %q not found", id))
	}
	return w, nil
}

// GetWatcherEvents takes the events a watcher has seen since it was made
// or last asked.
func (f *filesystemService) GetWatcherEvents(ctx context.Context, req *connect.Request[filesystem.GetWatcherEventsRequest]) (*connect.Response[filesystem.GetWatcherEventsResponse], error) {
	w, err := boxOf(heldFrom(ctx).sb).watchers.find(req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	events, dropped := w.events, w.dropped
	w.events, w.dropped = nil, 0
	w.mu.Unlock()
	if dropped > 0 {
		return nil, connect.NewError(connect.CodeResourceExhausted, fmt.Errorf("the watcher held %d events, the most it keeps, and dropped %d more; ask for them more often", MaxWatcherEvents, dropped))
	}
	select {
	case <-w.run.Done():
		if len(events) == 0 {
			return nil, connect.NewError(connect.CodeNotFound, errors.New("the watcher has ended: it reached the sandbox's lifetime, or its directory went"))
		}
	default:
	}
	return connect.NewResponse(&filesystem.GetWatcherEventsResponse{Events: events}), nil
}

func newWatcherID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "watch-" + hex.EncodeToString(b)
}

// RemoveWatcher ends a watcher.
func (f *filesystemService) RemoveWatcher(ctx context.Context, req *connect.Request[filesystem.RemoveWatcherRequest]) (*connect.Response[filesystem.RemoveWatcherResponse], error) {
	ws := &boxOf(heldFrom(ctx).sb).watchers
	w, err := ws.find(req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	ws.mu.Lock()
	delete(ws.byID, req.Msg.GetWatcherId())
	ws.mu.Unlock()
	_ = w.run.Signal(ctx, 9)
	return connect.NewResponse(&filesystem.RemoveWatcherResponse{}), nil
}
