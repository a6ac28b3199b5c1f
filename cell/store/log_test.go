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

// A node that has heard from no leader since it started times out and
// stands for election on every start; only losing a leader it knew is worth
// a warning (issue #13: a normal first start printed this WARN).
func TestRaftLoggerFirstElectionIsNotAWarning(t *testing.T) {
	tests := []struct {
		name, leaderAddr, leaderID string
		want                       string
	}{
		{"no leader yet", "", "", "level=DEBUG"},
		{"lost its leader", "10.0.0.9:7000", "node-b", "level=WARN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := newTestLogger()
			newRaftLogger(logger).Warn("heartbeat timeout reached, starting election",
				"last-leader-addr", tc.leaderAddr, "last-leader-id", tc.leaderID)
			if out := logs.String(); !strings.Contains(out, tc.want+" msg=\"heartbeat timeout reached") {
				t.Errorf("want it at %s:\n%s", tc.want, out)
			}
		})
	}
}

// A node joining a cell has an empty log: raft's pair of warnings about
// bringing it up to date is every join's, not a fault; a follower whose
// log has entries and still diverges warns.
func TestRaftLoggerCatchingUpIsNotAWarning(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		args []any
		want string
	}{
		{"new follower", "failed to get previous log", []any{"previous-index", 10, "last-index", uint64(0)}, "level=DEBUG"},
		{"lagging follower", "failed to get previous log", []any{"previous-index", 10, "last-index", uint64(7)}, "level=WARN"},
		{"leader to a new follower", "appendEntries rejected, sending older logs", []any{"peer", "node-2", "next", uint64(1)}, "level=DEBUG"},
		{"leader to a lagging follower", "appendEntries rejected, sending older logs", []any{"peer", "node-2", "next", uint64(40)}, "level=WARN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logger, logs := newTestLogger()
			newRaftLogger(logger).Warn(tc.msg, tc.args...)
			if out := logs.String(); !strings.Contains(out, tc.want+" msg=\""+tc.msg) {
				t.Errorf("want it at %s:\n%s", tc.want, out)
			}
		})
	}
}
