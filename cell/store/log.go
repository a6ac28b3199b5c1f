package store

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// raftLogLevel is the lowest hclog level forwarded to slog. Raft logs every
// election, heartbeat miss and snapshot at info/debug, which is noise for a
// cell operator; warnings and errors are what need a human.
const raftLogLevel = hclog.Warn

// newRaftLogger returns an hclog.Logger for raft whose records end up in
// logger. hclog has no slog bridge, so we use its intercept logger: the base
// logger formats nothing (Exclude drops everything) and a sink forwards
// records at raftLogLevel and above. The base level is also set to
// raftLogLevel so raft's IsDebug/IsTrace guards skip building debug messages.
func newRaftLogger(logger *slog.Logger) hclog.Logger {
	l := hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:    "raft",
		Level:   raftLogLevel,
		Exclude: func(hclog.Level, string, ...any) bool { return true },
	})
	l.RegisterSink(slogSink{logger: logger})
	return l
}

// slogSink is an hclog.SinkAdapter that writes to a slog.Logger.
type slogSink struct {
	logger *slog.Logger
}

func (s slogSink) Accept(name string, level hclog.Level, msg string, args ...any) {
	if level < raftLogLevel || level == hclog.Off {
		return
	}
	lvl := slog.LevelWarn
	if level >= hclog.Error {
		lvl = slog.LevelError
	}
	if firstElection(msg, args) || catchingUp(msg, args) {
		lvl = slog.LevelDebug
	}
	// hclog args are alternating key/value pairs, the same convention slog
	// uses, so they pass through unchanged.
	s.logger.With("component", name).Log(context.Background(), lvl, msg, args...)
}

// firstElection says whether a record is raft's heartbeat timeout on a node
// that has heard from no leader since it started. Raft logs it at WARN, but
// every node starts as a follower and times out before its first election,
// so a single-node cell printed a warning on every normal start; a node
// that loses a leader it knew still warns.
func firstElection(msg string, args []any) bool {
	if msg != "heartbeat timeout reached, starting election" {
		return false
	}
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == "last-leader-id" {
			return fmt.Sprint(args[i+1]) == ""
		}
	}
	return false
}

// catchingUp says whether a record is raft bringing a new follower's empty
// log up to date: the follower warns that it lacks the leader's previous
// entry, the leader that it was refused and sends older entries. Every
// node that joins a cell logs this pair once; a follower that lags later,
// with entries of its own, still warns.
func catchingUp(msg string, args []any) bool {
	switch msg {
	case "appendEntries rejected, sending older logs":
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "next" {
				return fmt.Sprint(args[i+1]) == "1"
			}
		}
	case "failed to get previous log":
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "last-index" {
				return fmt.Sprint(args[i+1]) == "0"
			}
		}
	}
	return false
}
