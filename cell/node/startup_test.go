package node

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// logBuffer is a log a test reads while steps still write it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testProgress reports after 20 ms, then every 40 ms.
func testProgress() (progress, *logBuffer) {
	logs := &logBuffer{}
	return progress{logger: slog.New(slog.NewTextHandler(logs, nil)), slowAfter: 20 * time.Millisecond, every: 40 * time.Millisecond}, logs
}

func sleepStep(d time.Duration) func(context.Context) error {
	return func(ctx context.Context) error {
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// The issue #13 failure, in small: a step without a deadline that takes
// longer than the next step's deadline must not make the next one fail.
func TestStepsHaveDeadlinesOfTheirOwn(t *testing.T) {
	p, logs := testProgress()
	ctx := context.Background()
	if err := p.run(ctx, step{name: "slow", done: "slow done"}, sleepStep(150*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := p.run(ctx, step{name: "next", done: "next done", timeout: 100 * time.Millisecond}, sleepStep(10*time.Millisecond)); err != nil {
		t.Fatalf("the step after a slow one: %v", err)
	}
	err := p.run(ctx, step{name: "register", done: "registered", timeout: 30 * time.Millisecond}, sleepStep(time.Second))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "node: register: not done within its 30ms") {
		t.Errorf("a step past its deadline: %v", err)
	}
	if out := logs.String(); strings.Contains(out, "registered") || !strings.Contains(out, `msg="start-up: next done"`) {
		t.Errorf("one line per step that finished:\n%s", out)
	}
}

func TestSlowStepSaysWhatItIsDoing(t *testing.T) {
	tests := []struct {
		name      string
		takes     time.Duration
		doing     string
		wantLines int
	}{
		{"fast", 0, "building", 0},
		{"slow", 90 * time.Millisecond, "building", 2}, // at 20 ms and 60 ms, and maybe at 100 on a busy host
		{"slow but quiet", 90 * time.Millisecond, "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, logs := testProgress()
			if err := p.run(context.Background(), step{name: "x", done: "x done", doing: tc.doing}, sleepStep(tc.takes), "dir", "/d"); err != nil {
				t.Fatal(err)
			}
			out := logs.String()
			if n := strings.Count(out, `msg="start-up: still building"`); n < tc.wantLines || (tc.wantLines == 0 && n > 0) {
				t.Errorf("%d progress lines, want %d (or more, if slow):\n%s", n, tc.wantLines, out)
			}
			if !regexp.MustCompile(`msg="start-up: x done" dir=/d took=\S+`).MatchString(out) {
				t.Errorf("no line for the finished step:\n%s", out)
			}
		})
	}
}

// A language whose Prepare builds for a while says what it builds.
func TestSlowPrepareSaysWhatItBuilds(t *testing.T) {
	p, logs := testProgress()
	dir := t.TempDir()
	prepared := func(id string, until func() bool) *langs.Language {
		return &langs.Language{
			ID: id, Binary: "/bin/sh", VersionArgv: []string{"/bin/sh", "-c", "echo 1.0"}, VersionRE: regexp.MustCompile(`(\S+)`),
			Mounts: []langs.Mount{{Source: dir, Destination: "/opt/x"}},
			Prepare: func(context.Context, *langs.Language) error {
				for deadline := time.Now().Add(10 * time.Second); !until() && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
				return nil
			},
		}
	}
	// The slow one builds until it has been reported on twice, however
	// late a loaded machine runs the reporter; the fast one not at all.
	stillReported := func() bool { return strings.Contains(logs.String(), `msg="still preparing slowlang"`) }
	c := detectLanguages(context.Background(), []*langs.Language{prepared("slowlang", stillReported), prepared("fastlang", func() bool { return true })}, dir, "a hint", p)
	if len(c.List()) != 2 {
		t.Fatalf("languages %v, problems %v", c.List(), c.Problems())
	}
	out := logs.String()
	for _, want := range []string{`msg="preparing slowlang: building ` + dir + ` (a hint)"`, `msg="still preparing slowlang"`, `msg="slowlang prepared"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "fastlang") {
		t.Errorf("a fast Prepare logged:\n%s", out)
	}
}
