package executor_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
	"github.com/sandboxapi/sandboxapi/sandboxes/sandboxtest"
)

// streamed collects a process's output as OnOutput gives it.
type streamed struct {
	mu  sync.Mutex
	out strings.Builder
}

func (s *streamed) add(stream string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if stream == "stdout" {
		s.out.Write(b)
	}
}

func (s *streamed) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		s.mu.Lock()
		got := s.out.String()
		s.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("never saw %q in %q", want, s.out.String())
}

// TestSessionProcesses: a session's processes run beside its executions
// and each other, in the session's sandbox (its files, its interpreter's
// world), take their stdin as it is written, and end by signal, by limit
// or with the session.
func TestSessionProcesses(t *testing.T) {
	ex := sandboxtest.Executor(t, executor.Limits{})
	s, err := ex.OpenSession("acct_p", language(t, ex, "python3"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	sh := func(script string) []string { return []string{"/bin/bash", "-c", script} }

	t.Run("a server in the background answers while cells and commands run", func(t *testing.T) {
		var log streamed
		srv, err := s.Start(ctx, executor.ProcessSpec{Argv: sh(`python3 -u -c '
import socket
s = socket.socket(socket.AF_UNIX)
s.bind("/tmp/srv.sock"); s.listen(4)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"pong " + c.recv(100)); c.close()
'`), OnOutput: log.add})
		if err != nil {
			t.Fatal(err)
		}
		log.waitFor(t, "listening")
		res, err := s.Execute(ctx, executor.Request{Code: "import socket\nc = socket.socket(socket.AF_UNIX)\nc.connect('/tmp/srv.sock')\nc.sendall(b'cell')\nprint(c.recv(100).decode())"})
		if err != nil || !completed(res) || string(res.Stdout) != "pong cell\n" {
			t.Fatalf("a cell beside the server: %v %+v %q %q", err, res, res.Stdout, res.Stderr)
		}
		cmd, err := s.Command(ctx, sh(`python3 -c 'import socket; c=socket.socket(socket.AF_UNIX); c.connect("/tmp/srv.sock"); c.sendall(b"cmd"); print(c.recv(100).decode())'`), nil, executor.Limits{}, nil)
		if err != nil || !completed(cmd) || string(cmd.Stdout) != "pong cmd\n" {
			t.Fatalf("a command beside the server: %v %+v", err, cmd)
		}
		if err := srv.Signal(ctx, int(syscall.SIGTERM)); err != nil {
			t.Fatal(err)
		}
		end, err := srv.Wait(ctx)
		if err != nil || end.Signal != int(syscall.SIGTERM) {
			t.Fatalf("the server's end: %v %+v", err, end)
		}
		if err := srv.Signal(ctx, int(syscall.SIGKILL)); !errors.Is(err, executor.ErrProcessEnded) {
			t.Errorf("a signal to an ended process: %v, want ErrProcessEnded", err)
		}
	})

	t.Run("stdin as it is written", func(t *testing.T) {
		var log streamed
		p, err := s.Start(ctx, executor.ProcessSpec{Argv: sh(`read -r l; echo "got $l"; cat; echo done; exit 3`), Stdin: true, OnOutput: log.add})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(ctx, []byte("one\n")); err != nil {
			t.Fatal(err)
		}
		log.waitFor(t, "got one\n")
		big := strings.Repeat("x", 600<<10) + "\n" // more than one chunk on the wire
		if err := p.Write(ctx, []byte(big)); err != nil {
			t.Fatal(err)
		}
		if err := p.CloseStdin(ctx); err != nil {
			t.Fatal(err)
		}
		res, err := p.Wait(ctx)
		if err != nil || res.ExitCode != 3 {
			t.Fatalf("end: %v %+v", err, res)
		}
		if want := "got one\n" + big + "done\n"; log.out.String() != want || string(res.Stdout) != want {
			t.Errorf("streamed %d bytes, result %d, want %d", log.out.Len(), len(res.Stdout), len(want))
		}
		if err := p.Write(ctx, []byte("late")); !errors.Is(err, executor.ErrProcessEnded) {
			t.Errorf("a write after the end: %v, want ErrProcessEnded", err)
		}
		q, err := s.Start(ctx, executor.ProcessSpec{Argv: sh(`cat`)})
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Write(ctx, []byte("x")); !errors.Is(err, executor.ErrNoStdin) && !errors.Is(err, executor.ErrProcessEnded) {
			t.Errorf("a write to a process without stdin: %v", err)
		}
		if res, err := q.Wait(ctx); err != nil || !completed(res) {
			t.Errorf("cat of an empty stdin: %v %+v", err, res)
		}
	})

	t.Run("limits hold per process", func(t *testing.T) {
		p, err := s.Start(ctx, executor.ProcessSpec{Argv: sh(`sleep 30`), Limits: executor.Limits{Wall: 500 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := p.Wait(ctx); err != nil || res.End != executor.EndWallLimit {
			t.Fatalf("a process past its wall limit: %v %+v", err, res)
		}
		p, err = s.Start(ctx, executor.ProcessSpec{Argv: sh(`while :; do :; done`), Limits: executor.Limits{CPU: time.Second, Wall: 20 * time.Second}})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := p.Wait(ctx); err != nil || res.End != executor.EndCPULimit {
			t.Fatalf("a process past its CPU limit: %v %+v", err, res)
		}
	})

	t.Run("a terminal", func(t *testing.T) {
		var log streamed
		var streams sync.Map
		p, err := s.Start(ctx, executor.ProcessSpec{Argv: []string{"/bin/bash", "-i"}, Env: []string{"TERM=xterm", "PS1=$ "},
			Terminal: &executor.TermSize{Cols: 80, Rows: 24},
			OnOutput: func(stream string, b []byte) {
				streams.Store(stream, true)
				log.mu.Lock()
				log.out.Write(b)
				log.mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Write(ctx, []byte("tty; stty size\n")); err != nil {
			t.Fatal(err)
		}
		log.waitFor(t, "24 80")
		log.waitFor(t, "/dev/pts/")
		if err := p.Resize(ctx, executor.TermSize{Cols: 100, Rows: 30}); err != nil {
			t.Fatal(err)
		}
		// A job of its own, in its own process group, holding the
		// terminal: it ends with the shell.
		if err := p.Write(ctx, []byte("stty size; sleep 300 &\n")); err != nil {
			t.Fatal(err)
		}
		log.waitFor(t, "30 100")
		if err := p.Write(ctx, []byte("exit 5\n")); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		res, err := p.Wait(wctx)
		if err != nil || res.ExitCode != 5 {
			t.Fatalf("the shell's end: %v %+v", err, res)
		}
		if _, ok := streams.Load("pty"); !ok {
			t.Error("no output came as the terminal's")
		}
		if _, ok := streams.Load("stdout"); ok {
			t.Error("a terminal's output came as stdout")
		}
		left, err := s.Command(ctx, sh(`cat /proc/[0-9]*/comm; echo listed`), nil, executor.Limits{}, nil)
		if err != nil || !strings.Contains(string(left.Stdout), "listed") || strings.Contains(string(left.Stdout), "sleep") {
			t.Errorf("the shell's job outlived it: %v %q", err, left.Stdout)
		}
	})

	t.Run("they end with the session", func(t *testing.T) {
		p, err := s.Start(ctx, executor.ProcessSpec{Argv: sh(`sleep 60`)})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := p.Wait(wctx); !errors.Is(err, executor.ErrSessionClosed) {
			t.Errorf("a process of a closed session: %v, want ErrSessionClosed", err)
		}
		if _, err := s.Start(ctx, executor.ProcessSpec{Argv: sh(`true`)}); !errors.Is(err, executor.ErrSessionClosed) {
			t.Errorf("a start in a closed session: %v", err)
		}
	})
}
