package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/jobs"
	"github.com/sandboxapi/sandboxapi/cell/store"
	"github.com/sandboxapi/sandboxapi/gossip"
)

const (
	// metaEvery is how often a node looks at its free slots and warm pools
	// and gossips them if they changed.
	metaEvery = 500 * time.Millisecond
	// reconcileEvery is how often the leader compares the registry with
	// gossip even when no gossip event came: an event can be missed while
	// leadership moves.
	reconcileEvery = 2 * time.Second
	// reconcileTimeout bounds one round of the leader's writes.
	reconcileTimeout = 10 * time.Second
	// joinRetry is how long a fresh node waits between rounds of asking
	// the members it was given to let it in.
	joinRetry = 500 * time.Millisecond
)

// joinCell makes a fresh node a voter of the cell through the first of
// members that answers, retrying until ctx ends: members start in any
// order, and the one asked may be between leaders.
func joinCell(ctx context.Context, st *store.Store, f store.Forwarder, members []string, id, raftAddr string, logger *slog.Logger) error {
	var last error
	for {
		for _, m := range members {
			err := store.JoinVia(ctx, f, m, id, raftAddr)
			if err == nil {
				logger.Info("start-up: joined the cell", "through", m)
				return nil
			}
			last = err
			logger.Debug("join through a member failed", "member", m, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join the cell through %v: %w (last: %w)", members, ctx.Err(), last)
		case <-time.After(joinRetry):
		}
	}
}

// isMember reports whether raft's configuration, as this node has it,
// names the node: one that has joined before need not ask again.
func isMember(st *store.Store, id string) bool {
	servers, err := st.Servers()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(servers, func(s store.Server) bool { return s.ID == id })
}

// gossipMeta keeps what this node gossips current: its free slots and
// warm pools, read every metaEvery and sent only when they change.
func (n *Node) gossipMeta(ctx context.Context) {
	t := time.NewTicker(metaEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		free := n.gate.Free()
		pools := n.exec.PoolStats().Warm
		n.agent.SetMeta(func(m *gossip.Meta) {
			m.Free = free
			m.Pools = pools
		})
	}
}

// lead runs on every node and reconciles the registry with gossip while
// this node is the leader (Nomad's serf reconciliation): gossip finds
// members and notices when one is gone, raft records what the cell
// agrees on. A node gossip calls dead is marked failed, its sessions
// become tombstones and its jobs go to live nodes; a node that left is
// marked left the same way. A failed node that comes back registers
// itself alive again when it starts.
func (n *Node) lead(ctx context.Context) {
	leading := n.store.IsLeader()
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	events := n.agent.Events()
	for {
		if leading {
			n.reconcile(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case leading = <-n.store.LeaderCh():
		case <-events:
		case <-tick.C:
		}
	}
}

// liveNodes are the ids of the cell's nodes that take new work, but
// except, sorted: where a gone node's jobs can go.
func (n *Node) liveNodes(except string) []string {
	var live []string
	for _, m := range n.agent.Nodes(n.cell) {
		if !m.Meta.Draining && m.Name != except {
			live = append(live, m.Name)
		}
	}
	return live
}

// reconcile is one round of the leader's work.
func (n *Node) reconcile(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	members := map[string]gossip.Member{}
	for _, m := range n.agent.Members() {
		if m.Meta.Role == gossip.RoleNode && m.Meta.Cell == n.cell {
			members[m.Name] = m
		}
	}
	live := n.liveNodes("")
	now := time.Now().UTC()
	for _, rec := range n.store.Nodes() {
		if rec.Cell != n.cell {
			continue
		}
		m, seen := members[rec.ID]
		var status string
		switch {
		case seen && m.State == gossip.Alive && !rec.Alive():
			// Called dead wrongly (a flap, a healed partition): it is back,
			// though what it held has gone to others.
			if err := n.store.SetNodeStatus(ctx, rec.ID, store.NodeAlive, now); err != nil {
				n.logger.Warn("cluster: cannot record a node's status", "node", rec.ID, "status", store.NodeAlive, "err", err)
			}
			continue
		case seen && (m.State == gossip.Alive || m.State == gossip.Suspect):
			// Suspect is not dead yet: memberlist may still hear from it.
			continue
		case seen && m.State == gossip.Left:
			status = store.NodeLeft
		case seen && m.State == gossip.Dead:
			status = store.NodeFailed
		case !seen && rec.ID != n.ID && time.Since(n.started) > n.timing.unseenFor():
			// Never heard of since this leader started: it died while no
			// one was watching (the whole cell restarted without it).
			status = store.NodeFailed
		default:
			continue
		}
		if rec.Status != status {
			if err := n.store.SetNodeStatus(ctx, rec.ID, status, now); err != nil {
				n.logger.Warn("cluster: cannot record a node's status", "node", rec.ID, "status", status, "err", err)
				continue
			}
			n.logger.Warn("cluster: node is gone", "node", rec.ID, "status", status)
		}
		n.clearAfter(ctx, rec.ID, live, now)
	}
}

// clearAfter hands what a gone node held to the rest of the cell: its
// sessions become tombstones (their sandboxes went with it) and its jobs
// go to live nodes. Both are no-ops once done, so a round that failed
// half-way is finished by the next.
func (n *Node) clearAfter(ctx context.Context, id string, live []string, now time.Time) {
	// Read first, so a node long gone costs the log nothing each round.
	held := slices.ContainsFunc(n.store.Sessions(store.SessionFilter{Node: id}), func(s store.Session) bool { return !s.Lost })
	jobs := len(n.store.Jobs(store.JobFilter{Node: id, Active: true})) > 0
	if held {
		n.loseSessions(ctx, id, now)
	}
	if jobs {
		n.reassign(ctx, id, live, now)
	}
}

func (n *Node) loseSessions(ctx context.Context, id string, now time.Time) {
	if k, err := n.store.LoseNodeSessions(ctx, id, now); err != nil {
		n.logger.Warn("cluster: cannot mark a gone node's sessions lost", "node", id, "err", err)
	} else if k > 0 {
		n.logger.Warn("cluster: sessions lost with their node", "node", id, "sessions", k)
	}
}

// reassign hands a gone node's jobs round-robin to the live nodes.
func (n *Node) reassign(ctx context.Context, id string, live []string, now time.Time) {
	if len(live) == 0 {
		return
	}
	if k, err := n.store.ReassignJobs(ctx, id, live, now); err != nil {
		n.logger.Warn("cluster: cannot reassign a gone node's jobs", "node", id, "err", err)
	} else if k > 0 {
		n.logger.Warn("cluster: jobs of a gone node reassigned", "node", id, "jobs", k, "to", live)
	}
}

// unseenFor is how long a leader waits before it calls a registered node
// it has never heard of in gossip failed: long enough for gossip to have
// found every member that is up, twice the time it takes to call one
// dead.
func (t Timing) unseenFor() time.Duration {
	return 2 * t.Gossip.WithDefaults().DetectionBound(maxPool)
}

// maxPool is the pool size the leader's waits are sized for: a few cells
// of a few nodes, and gateways.
const maxPool = 16

// Drain stops the node taking new work and finishes what it has, for a
// SIGTERM: it tells gossip it is draining (gateways stop sending it new
// requests), hands raft leadership to another node if it holds it, waits
// for requests in flight and running jobs (at most DrainTimeout), gives
// its pending jobs to other nodes, and, with LeaveOnStop, leaves raft and
// gossip. Close after it.
func (n *Node) Drain(ctx context.Context) error {
	n.drainOnce.Do(func() { n.drainErr = n.drain(ctx) })
	return n.drainErr
}

func (n *Node) drain(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.drainTimeout)
	defer cancel()
	start := time.Now()
	n.logger.Info("drain: draining", "timeout", n.drainTimeout)
	n.agent.SetMeta(func(m *gossip.Meta) { m.Draining = true })
	var errs []error
	if n.store.IsLeader() {
		if err := n.store.TransferLeadership(ctx); err != nil {
			// A cell of one has nobody to hand it to.
			n.logger.Info("drain: leadership not transferred", "err", err)
		}
	}
	// Gateways hear of the draining before the listener closes, so no new
	// request finds the door shut.
	select {
	case <-time.After(n.timing.propagation()):
	case <-ctx.Done():
	}
	if err := n.srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("finish requests: %w", err))
	}
	n.srvDone = true
	if err := n.jobs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("finish jobs: %w", err))
	}
	n.jobsDone = true
	if live := n.liveNodes(n.ID); len(live) > 0 {
		if k, err := n.store.ReassignJobs(ctx, n.ID, live, time.Now().UTC()); err != nil {
			errs = append(errs, fmt.Errorf("hand over pending jobs: %w", err))
		} else if k > 0 {
			n.logger.Info("drain: pending jobs handed over", "jobs", k, "to", live)
		}
	}
	if n.leaveOnStop {
		if err := n.store.Leave(ctx, n.ID); err != nil {
			errs = append(errs, fmt.Errorf("leave raft: %w", err))
		}
		if err := n.agent.Leave(n.timing.propagation()); err != nil {
			errs = append(errs, fmt.Errorf("leave gossip: %w", err))
		}
	}
	n.logger.Info("drain: done", "took", time.Since(start).Round(time.Millisecond), "left", n.leaveOnStop)
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node: drain: %w", err)
	}
	return nil
}

// propagation is how long a change to a node's gossip takes to reach
// every member: a metadata broadcast's least interval, and a few gossip
// rounds.
func (t Timing) propagation() time.Duration {
	g := t.Gossip.WithDefaults()
	return g.MetaInterval + 5*g.GossipInterval
}

// drainState is what Drain leaves for Close to skip.
type drainState struct {
	drainOnce         sync.Once
	drainErr          error
	srvDone, jobsDone bool
}

// elsewhereTimeout bounds asking another cell for a job.
const elsewhereTimeout = 10 * time.Second

// jobElsewhere serves a request for a job this cell does not have from the
// first other cell that has it, asking one live node of each in turn
// (jobs.Config.Elsewhere). The gateway's signed headers are valid in every
// cell behind it, so they go as they came.
func (n *Node) jobElsewhere(w http.ResponseWriter, r *http.Request) bool {
	byCell := map[string]gossip.Member{}
	for _, m := range n.agent.Nodes("") {
		if m.Meta.Cell != n.cell && !m.Meta.Draining {
			if _, ok := byCell[m.Meta.Cell]; !ok {
				byCell[m.Meta.Cell] = m
			}
		}
	}
	client := &http.Client{Transport: n.peers, Timeout: elsewhereTimeout}
	for _, cell := range slices.Sorted(maps.Keys(byCell)) {
		req, err := http.NewRequestWithContext(r.Context(), r.Method, n.peerScheme+byCell[cell].Meta.API+r.URL.RequestURI(), nil)
		if err != nil {
			return false
		}
		req.Header = r.Header.Clone()
		req.Header.Set(jobs.HeaderFromCell, n.cell)
		resp, err := client.Do(req)
		if err != nil {
			n.logger.Debug("cluster: another cell did not answer for a job", "cell", cell, "err", err)
			continue
		}
		if resp.StatusCode == http.StatusNotFound {
			resp.Body.Close()
			continue
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
		resp.Body.Close()
		return true
	}
	return false
}

// untilLeader retries write while the cell is between leaders, until ctx
// ends: a node that has just joined may see the leader change under it
// (a loaded host, the others starting too), and its first writes are
// safe to repeat.
func untilLeader(ctx context.Context, write func(context.Context) error) error {
	for {
		err := write(ctx)
		if err == nil || ctx.Err() != nil ||
			!errors.Is(err, store.ErrNotLeader) && !errors.Is(err, store.ErrUnreachable) && !errors.Is(err, store.ErrOutcomeUnknown) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(joinRetry):
		}
	}
}
