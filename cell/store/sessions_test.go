package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testSession(id string) Session {
	return Session{
		ID: id, Account: "acct_a", Language: "python3", Node: "n1", IdleTTLSeconds: 300,
		CreatedAt: t0, ExpiresAt: t0.Add(300 * time.Second),
	}
}

func withSession(mut func(*Session)) Session {
	s := testSession("s")
	mut(&s)
	return s
}

// Every session command against a state with or without session "s":
// what is refused, and what each accepted command leaves behind.
func TestFSMSessionCommands(t *testing.T) {
	tests := []struct {
		name    string
		exists  bool
		typ     CommandType
		payload any
		wantErr error
		want    any // the handler's response
		check   func(t *testing.T, s *Session)
	}{
		{name: "open", typ: CmdOpenSession, payload: openSessionCmd{Session: testSession("s"), MaxPerAccount: 1, Now: t0},
			check: func(t *testing.T, s *Session) {
				if !reflect.DeepEqual(*s, testSession("s")) {
					t.Errorf("opened session = %+v", s)
				}
			}},
		{name: "open keeps the door's meta", typ: CmdOpenSession,
			payload: openSessionCmd{Session: withSession(func(s *Session) { s.Door, s.Meta = "e2b", map[string]string{"template": "base"} }), MaxPerAccount: 1, Now: t0},
			check: func(t *testing.T, s *Session) {
				if s.Door != "e2b" || s.Meta["template"] != "base" {
					t.Errorf("opened session = %+v, want door e2b with its meta", s)
				}
			}},
		{name: "open twice", exists: true, typ: CmdOpenSession, payload: openSessionCmd{Session: testSession("s"), Now: t0}, wantErr: ErrSessionExists},
		{name: "open without account", typ: CmdOpenSession,
			payload: openSessionCmd{Session: withSession(func(s *Session) { s.Account = "" }), Now: t0}, wantErr: ErrInvalidSession},
		{name: "open without node", typ: CmdOpenSession,
			payload: openSessionCmd{Session: withSession(func(s *Session) { s.Node = "" }), Now: t0}, wantErr: ErrInvalidSession},
		{name: "open without TTL", typ: CmdOpenSession,
			payload: openSessionCmd{Session: withSession(func(s *Session) { s.IdleTTLSeconds = 0 }), Now: t0}, wantErr: ErrInvalidSession},
		{name: "open expiring before it was created", typ: CmdOpenSession,
			payload: openSessionCmd{Session: withSession(func(s *Session) { s.ExpiresAt = t0.Add(-time.Second) }), Now: t0}, wantErr: ErrInvalidSession},

		{name: "touch moves expiry and count forward", exists: true, typ: CmdTouchSessions,
			payload: touchSessionsCmd{Touches: []SessionTouch{{ID: "s", Node: "n1", ExpiresAt: t0.Add(time.Hour), Executions: 3}}}, want: 1,
			check: func(t *testing.T, s *Session) {
				if !s.ExpiresAt.Equal(t0.Add(time.Hour)) || s.Executions != 3 {
					t.Errorf("touched session = %+v", s)
				}
			}},
		{name: "a late touch cannot move anything back", exists: true, typ: CmdTouchSessions,
			payload: touchSessionsCmd{Touches: []SessionTouch{{ID: "s", Node: "n1", ExpiresAt: t0, Executions: 0}}}, want: 0,
			check: func(t *testing.T, s *Session) {
				if !s.ExpiresAt.Equal(t0.Add(300*time.Second)) || s.Executions != 0 {
					t.Errorf("session after a stale touch = %+v", s)
				}
			}},
		{name: "touch from another node is skipped", exists: true, typ: CmdTouchSessions,
			payload: touchSessionsCmd{Touches: []SessionTouch{{ID: "s", Node: "n2", ExpiresAt: t0.Add(time.Hour), Executions: 3}}}, want: 0,
			check: func(t *testing.T, s *Session) {
				if s.Executions != 0 {
					t.Errorf("another node's touch changed the session: %+v", s)
				}
			}},
		{name: "touch of a closed session is skipped", typ: CmdTouchSessions,
			payload: touchSessionsCmd{Touches: []SessionTouch{{ID: "s", Node: "n1", ExpiresAt: t0.Add(time.Hour)}}}, want: 0},

		{name: "close", exists: true, typ: CmdCloseSession, payload: closeSessionCmd{ID: "s"}},
		{name: "close a missing session", typ: CmdCloseSession, payload: closeSessionCmd{ID: "s"}, wantErr: ErrSessionNotFound},
		{name: "close the node's sessions", exists: true, typ: CmdCloseNodeSessions, payload: closeNodeSessionsCmd{Node: "n1"}, want: 1},
		{name: "close another node's sessions", exists: true, typ: CmdCloseNodeSessions, payload: closeNodeSessionsCmd{Node: "n2"}, want: 0,
			check: func(*testing.T, *Session) {}},
		{name: "close sessions of no node", exists: true, typ: CmdCloseNodeSessions, payload: closeNodeSessionsCmd{}, wantErr: ErrInvalidSession},
		{name: "purge at expiry", exists: true, typ: CmdPurgeSessions, payload: purgeSessionsCmd{Before: t0.Add(300 * time.Second)}, want: 1},
		{name: "purge before expiry", exists: true, typ: CmdPurgeSessions, payload: purgeSessionsCmd{Before: t0.Add(299 * time.Second)}, want: 0,
			check: func(*testing.T, *Session) {}},
		{name: "purge without a time", exists: true, typ: CmdPurgeSessions, payload: purgeSessionsCmd{}, wantErr: ErrInvalidSession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler))
			if tt.exists {
				mustApply(t, f, CmdOpenSession, openSessionCmd{Session: testSession("s"), Now: t0})
			}
			before, _ := json.Marshal(f.st.Sessions)

			resp := fsmApply(t, f, tt.typ, tt.payload)
			err, _ := resp.(error)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Apply(%s) = %v, want error %v", tt.typ, resp, tt.wantErr)
			}
			if tt.wantErr != nil {
				if after, _ := json.Marshal(f.st.Sessions); !bytes.Equal(before, after) {
					t.Errorf("rejected command changed the state:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			if tt.want != nil && resp != tt.want {
				t.Errorf("Apply(%s) = %v, want %v", tt.typ, resp, tt.want)
			}
			s := f.st.Sessions["s"]
			switch {
			case tt.check == nil && s != nil:
				t.Errorf("session still there: %+v", s)
			case tt.check != nil && s == nil:
				t.Fatal("session s missing after the command")
			case tt.check != nil:
				tt.check(t, s)
			}
		})
	}
}

// The per-account cap counts only the account's sessions that are live at
// the command's time, so expired records awaiting their purge and other
// accounts' sessions do not hold anyone back.
func TestFSMOpenSessionCap(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	open := func(id, account string, expires time.Time, now time.Time) error {
		s := testSession(id)
		s.Account, s.ExpiresAt = account, expires
		resp := fsmApply(t, f, CmdOpenSession, openSessionCmd{Session: s, MaxPerAccount: 2, Now: now})
		err, _ := resp.(error)
		return err
	}
	if err := open("a1", "acct_a", t0.Add(time.Minute), t0); err != nil {
		t.Fatal(err)
	}
	if err := open("a2", "acct_a", t0.Add(time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	if err := open("a3", "acct_a", t0.Add(time.Hour), t0); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("third session = %v, want %v", err, ErrTooManySessions)
	}
	if err := open("b1", "acct_b", t0.Add(time.Hour), t0); err != nil {
		t.Fatalf("another account was held back: %v", err)
	}
	// a1 has expired two minutes later, even though no purge ran yet.
	if err := open("a3", "acct_a", t0.Add(time.Hour), t0.Add(2*time.Minute)); err != nil {
		t.Fatalf("an expired session still counted: %v", err)
	}
}

func TestFSMSessionsSnapshotRestore(t *testing.T) {
	src := newFSM(slog.New(slog.DiscardHandler))
	for i := range 3 {
		mustApply(t, src, CmdOpenSession, openSessionCmd{Session: testSession(fmt.Sprint("s", i)), Now: t0})
	}
	mustApply(t, src, CmdTouchSessions, touchSessionsCmd{Touches: []SessionTouch{{ID: "s1", Node: "n1", ExpiresAt: t0.Add(time.Hour), Executions: 7}}})
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	data := snap.(*fsmSnapshot).data
	dst := newFSM(slog.New(slog.DiscardHandler))
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(src.st.Sessions)
	if got, _ := json.Marshal(dst.st.Sessions); !bytes.Equal(got, want) || len(dst.st.Sessions) != 3 {
		t.Errorf("restored sessions differ:\nwant %s\ngot  %s", want, got)
	}
}

func TestFSMRestoreSessions(t *testing.T) {
	tests := []struct {
		name     string
		snapshot string
		wantErr  error
		want     int
	}{
		{name: "snapshot from before sessions", snapshot: `{"version":1,"state":{"nodes":{}}}`, want: 0},
		{name: "misfiled session", snapshot: `{"version":1,"state":{"sessions":{"a":{"id":"b"}}}}`, wantErr: ErrInvalidSession},
		{name: "null session", snapshot: `{"version":1,"state":{"sessions":{"a":null}}}`, wantErr: ErrInvalidSession},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFSM(slog.New(slog.DiscardHandler))
			err := f.Restore(io.NopCloser(strings.NewReader(tt.snapshot)))
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Restore() = %v, want %v", err, tt.wantErr)
			}
			if err == nil {
				if len(f.st.Sessions) != tt.want {
					t.Errorf("sessions = %d, want %d", len(f.st.Sessions), tt.want)
				}
				// Writable after the restore.
				mustApply(t, f, CmdOpenSession, openSessionCmd{Session: testSession("s"), Now: t0})
			}
		})
	}
}

func TestStoreSessionLifecycle(t *testing.T) {
	s := openStore(t, Config{Dir: t.TempDir(), Bootstrap: true})
	waitLeader(t, s)
	ctx := testCtx(t)

	a := testSession("sa")
	b := testSession("sb")
	b.Node, b.Account, b.CreatedAt = "n2", "acct_b", t0.Add(-time.Second)
	c := testSession("sc")
	c.ExpiresAt = t0.Add(time.Second)
	for _, sess := range []Session{a, b, c} {
		if err := s.OpenSession(ctx, sess, 5, t0); err != nil {
			t.Fatalf("OpenSession(%s) error = %v", sess.ID, err)
		}
	}
	if err := s.OpenSession(ctx, Session{ID: "x"}, 0, t0); !errors.Is(err, ErrInvalidSession) {
		t.Errorf("OpenSession(invalid) = %v, want %v", err, ErrInvalidSession)
	}
	if err := s.OpenSession(ctx, testSession("sd"), 2, t0); !errors.Is(err, ErrTooManySessions) {
		t.Errorf("OpenSession over the cap = %v, want %v", err, ErrTooManySessions)
	}
	if got := sessionIDs(s.Sessions(SessionFilter{})); got != "sb,sa,sc" {
		t.Errorf("sessions = %s, want sb,sa,sc (oldest first)", got)
	}
	if got := sessionIDs(s.Sessions(SessionFilter{Node: "n1", Account: "acct_a"})); got != "sa,sc" {
		t.Errorf("n1's sessions of acct_a = %s", got)
	}

	n, err := s.TouchSessions(ctx, []SessionTouch{{ID: "sa", Node: "n1", ExpiresAt: t0.Add(time.Hour), Executions: 2}, {ID: "gone", Node: "n1", ExpiresAt: t0}})
	if err != nil || n != 1 {
		t.Errorf("TouchSessions() = %d, %v, want 1", n, err)
	}
	if got, ok := s.Session("sa"); !ok || got.Executions != 2 || !got.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("Session(sa) = %+v, %v", got, ok)
	}

	if n, err := s.PurgeSessions(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
		t.Errorf("PurgeSessions() = %d, %v, want 1 (sc)", n, err)
	}
	if err := s.CloseSession(ctx, "sc"); !errors.Is(err, ErrSessionNotFound) {
		t.Errorf("CloseSession(purged) = %v, want %v", err, ErrSessionNotFound)
	}
	if err := s.CloseSession(ctx, "sa"); err != nil {
		t.Errorf("CloseSession() = %v", err)
	}
	if n, err := s.CloseNodeSessions(ctx, "n2"); err != nil || n != 1 {
		t.Errorf("CloseNodeSessions(n2) = %d, %v, want 1", n, err)
	}
	if got := s.Sessions(SessionFilter{}); len(got) != 0 {
		t.Errorf("sessions left: %s", sessionIDs(got))
	}
}

// Session records survive a restart, so a restarted node can find and end
// the ones it held.
func TestSessionsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, Config{Dir: dir, Bootstrap: true})
	waitLeader(t, s)
	if err := s.OpenSession(testCtx(t), testSession("s1"), 0, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, Config{Dir: dir, Bootstrap: true})
	waitLeader(t, s2)
	if _, ok := s2.Session("s1"); !ok {
		t.Fatal("session record lost across a restart")
	}
	if n, err := s2.CloseNodeSessions(testCtx(t), "n1"); err != nil || n != 1 {
		t.Errorf("CloseNodeSessions() after restart = %d, %v", n, err)
	}
}

func sessionIDs(ss []Session) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return strings.Join(out, ",")
}

// A dead node's sessions become tombstones: kept for their idle TTL from
// the loss, counted against no cap, untouchable by their old node, and
// purged like any expired record.
func TestFSMLoseNodeSessions(t *testing.T) {
	f := newFSM(slog.New(slog.DiscardHandler))
	mine := func(id, node string, ttl int) Session {
		s := testSession(id)
		// Live until well after the loss, whatever their TTL.
		s.Node, s.IdleTTLSeconds, s.ExpiresAt = node, ttl, t0.Add(time.Hour)
		return s
	}
	for _, s := range []Session{mine("a", "n1", 300), mine("b", "n1", 60), mine("c", "n2", 300)} {
		mustApply(t, f, CmdOpenSession, openSessionCmd{Session: s, Now: t0})
	}
	at := t0.Add(10 * time.Minute)
	for _, bad := range []loseNodeSessionsCmd{{At: at}, {Node: "n1"}} {
		if err := asError(fsmApply(t, f, CmdLoseNodeSessions, bad)); !errors.Is(err, ErrInvalidSession) {
			t.Errorf("lose %+v = %v, want %v", bad, err, ErrInvalidSession)
		}
	}
	if n := mustApply(t, f, CmdLoseNodeSessions, loseNodeSessionsCmd{Node: "n1", At: at}); n != 2 {
		t.Fatalf("lost %v sessions, want 2", n)
	}
	for id, wantExpiry := range map[string]time.Time{"a": at.Add(300 * time.Second), "b": at.Add(60 * time.Second)} {
		s := f.st.Sessions[id]
		if !s.Lost || !s.LostAt.Equal(at) || !s.ExpiresAt.Equal(wantExpiry) {
			t.Errorf("%s after the loss: %+v, want lost at %v until %v", id, s, at, wantExpiry)
		}
	}
	if c := f.st.Sessions["c"]; c.Lost {
		t.Error("another node's session was lost")
	}
	// Losing again changes nothing (the leader may write it twice).
	if n := mustApply(t, f, CmdLoseNodeSessions, loseNodeSessionsCmd{Node: "n1", At: at.Add(time.Minute)}); n != 0 || !f.st.Sessions["a"].LostAt.Equal(at) {
		t.Errorf("second loss turned %v, lost_at %v", n, f.st.Sessions["a"].LostAt)
	}
	// The old node, if it was not dead after all, cannot revive them.
	touch := touchSessionsCmd{Touches: []SessionTouch{{ID: "a", Node: "n1", ExpiresAt: at.Add(time.Hour), Executions: 9}}}
	if n := mustApply(t, f, CmdTouchSessions, touch); n != 0 || f.st.Sessions["a"].Executions != 0 {
		t.Errorf("a touch changed a tombstone: %v", n)
	}
	// Nor does its restart delete them: they answer "lost" until expiry.
	if n := mustApply(t, f, CmdCloseNodeSessions, closeNodeSessionsCmd{Node: "n1"}); n != 0 {
		t.Errorf("the node's restart deleted %v tombstones", n)
	}
	// Tombstones hold no place under the cap: with c live, a cap of 2
	// leaves room for one more.
	open := func(id string) error {
		return asError(fsmApply(t, f, CmdOpenSession, openSessionCmd{Session: mine(id, "n2", 300), MaxPerAccount: 2, Now: at}))
	}
	if err := open("d"); err != nil {
		t.Errorf("open with two tombstones and one live session under a cap of 2: %v", err)
	}
	if err := open("e"); !errors.Is(err, ErrTooManySessions) {
		t.Errorf("third live session under a cap of 2: %v, want %v", err, ErrTooManySessions)
	}
	// A snapshot keeps them as they are.
	f = restored(t, f)
	if s := f.st.Sessions["b"]; !s.Lost || !s.LostAt.Equal(at) {
		t.Errorf("tombstone after a restore: %+v", s)
	}
	if n := mustApply(t, f, CmdPurgeSessions, purgeSessionsCmd{Before: at.Add(60 * time.Second)}); n != 1 {
		t.Errorf("purge at b's expiry removed %v records, want 1", n)
	}
	if _, ok := f.st.Sessions["b"]; ok {
		t.Error("expired tombstone not purged")
	}
}
