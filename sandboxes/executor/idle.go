package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// What a session's processes may do while no execution runs: they keep
// running, but the sandbox gets at most Config.SessionIdleCPU of a core,
// and the CPU it uses is metered against Config.SessionIdleBudget; once
// that is spent, what they left running is stopped, and the next result
// says so. The meter is a timer set to when the budget could be spent at
// the earliest, not a poll. See DESIGN.md ("Sessions between executions").

// Defaults of Config.SessionIdleCPU and Config.SessionIdleBudget.
const (
	DefaultSessionIdleCPU    = 0.25
	DefaultSessionIdleBudget = time.Minute
)

const (
	// idleMinRecheck keeps a budget nearly spent from being re-checked
	// without pause.
	idleMinRecheck = 100 * time.Millisecond
	// idleQuiet is idle CPU that, the budget spent, does not make the
	// session's processes be stopped: gVisor's own idling, a server
	// waiting for requests. More than that since the last stop does.
	idleQuiet = 100 * time.Millisecond
	// idleMaxRecheck bounds the back-off of a spent, quiet session.
	idleMaxRecheck = time.Minute
)

// idleMeter is a session's state between executions, guarded by its act.
type idleMeter struct {
	cores  float64
	budget time.Duration

	resting bool          // no execution runs; the cap is on
	from    time.Duration // the sandbox's CPU as this rest began
	used    time.Duration // idle CPU of the rests before this one
	// usedAtStop is the idle CPU when background work was last stopped,
	// or when a rest with the budget spent began: what came since runs
	// on no budget.
	usedAtStop time.Duration
	timer      *time.Timer
	gen        int // the timer that may act; older ones find it changed
	recheck    time.Duration

	// notice is for the next result: what stopping did.
	notice    string
	stateLost bool
	capFailed bool // the host cannot cap; logged once
}

// idleCPU is the idle CPU so far, this rest's included.
func (m *idleMeter) idleCPU(now time.Duration) time.Duration {
	if !m.resting {
		return m.used
	}
	return m.used + now - m.from
}

// IdleCPU is the CPU the session's sandbox has used while no execution
// ran, what Config.SessionIdleBudget meters.
func (s *Session) IdleCPU() time.Duration {
	s.act.Lock()
	defer s.act.Unlock()
	return s.idle.idleCPU(s.w.sb.Usage().CPU)
}

// begin marks the start of an execution or a process: the first of them
// wakes the session and, with network, binds its network (the session's
// policy) until the last that uses it ends.
func (s *Session) begin(network bool) error {
	s.act.Lock()
	defer s.act.Unlock()
	if network && s.netUsers == 0 {
		res := &Result{}
		unbind, err := bindNetwork(s.w, s.network, res)
		if err != nil {
			return fmt.Errorf("executor: session network: %w", err)
		}
		s.unbind = func(into *Result) {
			unbind()
			if into != nil {
				into.Network = res.Network
			}
		}
	}
	if network {
		s.netUsers++
	}
	s.busy++
	if s.busy == 1 {
		s.wake()
	}
	return nil
}

// end marks the end of what begin began: the last to use the network
// unbinds it, and what was done through it since it was bound goes into
// res (nil: nowhere); the last of all rests the session.
func (s *Session) end(network bool, res *Result) {
	s.act.Lock()
	defer s.act.Unlock()
	if network {
		s.netUsers--
		if s.netUsers == 0 && s.unbind != nil {
			s.unbind(res)
			s.unbind = nil
		}
	}
	s.busy--
	if s.busy == 0 {
		s.rest()
	}
}

// wake ends a rest before an execution: the cap goes, the meter stops.
// s.act is held.
func (s *Session) wake() {
	m := &s.idle
	if !m.resting {
		return
	}
	m.gen++
	if m.timer != nil {
		m.timer.Stop()
	}
	m.used = m.idleCPU(s.w.sb.Usage().CPU)
	m.resting = false
	s.setCap(0)
}

// rest begins one after an execution: the cap goes on, the meter runs.
// s.act is held.
func (s *Session) rest() {
	m := &s.idle
	if s.closed.Load() || !s.w.alive() || m.resting {
		return
	}
	m.resting = true
	m.from = s.w.sb.Usage().CPU
	s.setCap(m.cores)
	left := m.budget - m.used
	if left <= 0 {
		// Spent already: what this execution left running may run on
		// only as long as it stays quiet.
		m.usedAtStop = m.used
		m.recheck = idleMinRecheck
		s.arm(m.recheck)
		return
	}
	s.arm(s.untilSpent(left))
}

// untilSpent is when left of the budget can be spent at the earliest: the
// sandbox busy up to its cap the whole time.
func (s *Session) untilSpent(left time.Duration) time.Duration {
	return max(time.Duration(float64(left)/s.idle.cores), idleMinRecheck)
}

func (s *Session) setCap(cores float64) {
	err := s.w.sb.SetCPULimit(cores)
	if err != nil && !s.idle.capFailed {
		s.idle.capFailed = true
		s.e.cfg.Logger.Warn("idle sessions run uncapped", "err", err)
	}
}

func (s *Session) arm(d time.Duration) {
	m := &s.idle
	m.gen++
	gen := m.gen
	m.timer = time.AfterFunc(d, func() { s.idleCheck(gen) })
}

// idleCheck is the meter's timer: it re-arms for what is left of the
// budget, or, the budget spent and idle CPU still being used, stops the
// session's background processes.
func (s *Session) idleCheck(gen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.act.Lock()
	defer s.act.Unlock()
	m := &s.idle
	if s.closed.Load() || gen != m.gen || !m.resting {
		return
	}
	used := m.idleCPU(s.w.sb.Usage().CPU)
	if left := m.budget - used; left > 0 {
		s.arm(s.untilSpent(left))
		return
	}
	if used-m.usedAtStop < idleQuiet {
		// Quiet since the last stop: look again, later each time.
		m.recheck = min(max(2*m.recheck, idleMinRecheck), idleMaxRecheck)
		s.arm(m.recheck)
		return
	}
	// The stop is the executor's work, not the session's: uncapped, it
	// is over before what it stops can use more.
	s.setCap(0)
	if err := s.stopBackground(); err != nil {
		s.e.cfg.Logger.Warn("stopping a session's background processes", "err", err)
	}
	s.setCap(m.cores)
	m.usedAtStop = m.idleCPU(s.w.sb.Usage().CPU)
	// The soonest anything left could be loud again.
	m.recheck = s.untilSpent(idleQuiet)
	s.arm(m.recheck)
}

// errStopFailed is a sandbox that did not answer the stop.
var errStopFailed = errors.New("executor: the session's sandbox did not answer the stop")

// stopBackground asks the session's init to end what its programs left
// running, and notes for the next result what it ended. s.mu and s.act
// are held: no execution or process runs.
func (s *Session) stopBackground() error {
	job := wire.Job{WorkDir: workDir, StopBackground: true}
	out := s.w.run(context.Background(), job, &Result{}, 1<<10, s.e.cfg.BootGrace, nil, nil)
	if !out.done {
		return fmt.Errorf("%w: %w", errStopFailed, out.protoErr)
	}
	for _, st := range out.steps {
		if r := st.result; r != nil && (r.Stopped > 0 || r.StateLost) {
			m := &s.idle
			m.notice = fmt.Sprintf("while no execution ran, the session's background processes used up its CPU budget of %s and were stopped", m.budget)
			if r.StateLost {
				m.stateLost = true
				m.notice += "; the interpreter was using it too and was stopped with them, so its variables are gone"
			}
			if len(r.ContextsStopped) > 0 {
				m.notice += fmt.Sprintf("; so were the interpreters of contexts %s, which were using it: their variables are gone", strings.Join(r.ContextsStopped, ", "))
			}
		}
	}
	return nil
}

// tellIdle puts what happened while the session rested into res, once.
func (s *Session) tellIdle(res *Result) {
	m := &s.idle
	if m.notice == "" {
		return
	}
	if res.Message != "" {
		res.Message = m.notice + "; " + res.Message
	} else {
		res.Message = m.notice
	}
	res.StateLost = res.StateLost || m.stateLost
	m.notice, m.stateLost = "", false
}
