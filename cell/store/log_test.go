package store

import (
	"strings"
	"testing"
)

func TestRaftLoggerForwardsWarnAndAbove(t *testing.T) {
	logger, logs := newTestLogger()
	l := newRaftLogger(logger).Named("net")

	l.Trace("trace-msg")
	l.Debug("debug-msg")
	l.Info("info-msg")
	l.Warn("warn-msg", "peer", "10.0.0.9:7000")
	l.Error("error-msg", "err", "boom")

	out := logs.String()
	for _, quiet := range []string{"trace-msg", "debug-msg", "info-msg"} {
		if strings.Contains(out, quiet) {
			t.Errorf("%s reached slog; raft below warn must be dropped:\n%s", quiet, out)
		}
	}
	for _, want := range []string{
		"level=WARN msg=warn-msg",
		"peer=10.0.0.9:7000",
		"level=ERROR msg=error-msg",
		"err=boom",
		"component=raft.net",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("slog output lacks %q:\n%s", want, out)
		}
	}
	if l.IsDebug() {
		t.Error("IsDebug() = true; raft would build debug messages only to drop them")
	}
}
