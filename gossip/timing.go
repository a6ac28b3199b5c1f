package gossip

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"
)

// Timing is how fast the pool probes, suspects and spreads news. Zero
// fields take DefaultTiming's values, which suit a loaded two-core machine
// (DESIGN.md has the figures they give): slow enough that a member starved
// of CPU for a while is suspected and refutes it rather than being declared
// dead, fast enough that a killed one is dead to the others in seconds.
type Timing struct {
	// ProbeInterval is how often each member probes another one.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for its ack before asking
	// other members to probe indirectly.
	ProbeTimeout time.Duration
	// SuspicionMult scales how long a suspected member has to refute the
	// suspicion before it is declared dead: SuspicionMult probe intervals
	// (more in pools of ten and over).
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the suspicion time when other members
	// do not confirm the suspicion, as a multiple of the least one.
	SuspicionMaxTimeoutMult int
	// GossipInterval is how often a member sends queued news to a few
	// others.
	GossipInterval time.Duration
	// PushPullInterval is how often a member swaps its whole view with
	// another one, which heals what gossip missed.
	PushPullInterval time.Duration
	// TCPTimeout bounds a stream exchange: a join, a push-pull.
	TCPTimeout time.Duration
	// MetaInterval is the least time between two broadcasts of this
	// member's metadata: SetMeta calls in between are coalesced into one.
	MetaInterval time.Duration
	// JoinRetry is the first wait between join attempts; it doubles up to
	// JoinRetryMax.
	JoinRetry    time.Duration
	JoinRetryMax time.Duration
}

// DefaultTiming returns the timing zero fields stand for.
func DefaultTiming() Timing {
	return Timing{
		ProbeInterval:           500 * time.Millisecond,
		ProbeTimeout:            400 * time.Millisecond,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 2,
		GossipInterval:          100 * time.Millisecond,
		PushPullInterval:        15 * time.Second,
		TCPTimeout:              5 * time.Second,
		MetaInterval:            250 * time.Millisecond,
		JoinRetry:               100 * time.Millisecond,
		JoinRetryMax:            5 * time.Second,
	}
}

// WithDefaults returns t with its zero fields set from DefaultTiming.
func (t Timing) WithDefaults() Timing {
	d := DefaultTiming()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setDur(&t.ProbeInterval, d.ProbeInterval)
	setDur(&t.ProbeTimeout, d.ProbeTimeout)
	setDur(&t.GossipInterval, d.GossipInterval)
	setDur(&t.PushPullInterval, d.PushPullInterval)
	setDur(&t.TCPTimeout, d.TCPTimeout)
	setDur(&t.MetaInterval, d.MetaInterval)
	setDur(&t.JoinRetry, d.JoinRetry)
	setDur(&t.JoinRetryMax, d.JoinRetryMax)
	if t.SuspicionMult <= 0 {
		t.SuspicionMult = d.SuspicionMult
	}
	if t.SuspicionMaxTimeoutMult <= 0 {
		t.SuspicionMaxTimeoutMult = d.SuspicionMaxTimeoutMult
	}
	if t.JoinRetryMax < t.JoinRetry {
		t.JoinRetryMax = t.JoinRetry
	}
	return t
}

// DetectionBound is the longest a member killed outright can stay alive
// in the views of the others of a pool of n members, by memberlist's
// arithmetic with t, when no other member is starved of CPU: every other
// member reaches it in its probe round (n-1 intervals), the failed probe
// takes one more, the suspicion runs its longest, and the news of its
// death takes a few gossip rounds. Memberlist lengthens its own probes on
// a member that misses acks, so a loaded machine can exceed it.
func (t Timing) DetectionBound(n int) time.Duration {
	t = t.WithDefaults()
	n = max(n, 2)
	scale := math.Max(1, math.Log10(float64(n)))
	suspicion := time.Duration(float64(t.SuspicionMult) * scale * float64(t.ProbeInterval))
	return time.Duration(n)*t.ProbeInterval +
		time.Duration(t.SuspicionMaxTimeoutMult)*suspicion +
		4*t.GossipInterval
}

// apply sets t (with defaults) on a memberlist config.
func (t Timing) apply(c *memberlist.Config) {
	t = t.WithDefaults()
	c.ProbeInterval = t.ProbeInterval
	c.ProbeTimeout = t.ProbeTimeout
	c.SuspicionMult = t.SuspicionMult
	c.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	c.GossipInterval = t.GossipInterval
	c.PushPullInterval = t.PushPullInterval
	c.TCPTimeout = t.TCPTimeout
}
