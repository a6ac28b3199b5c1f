package node

import (
	"errors"
	"strconv"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/metrics"
)

// raftStates are the values of sandboxapi_raft_state's label, each
// reported, 1 for the node's own and 0 for the others, so a query for the
// leaders of a cell finds one series per node.
var raftStates = []string{"leader", "follower", "candidate", "shutdown"}

// registerMetrics registers the gauges read from the node's parts at
// scrape time (package metrics names them all).
func (n *Node) registerMetrics(m *metrics.Node) error {
	if m == nil {
		return nil
	}
	raftStat := func(key string) func() float64 {
		return func() float64 {
			v, _ := strconv.ParseFloat(n.store.Stats()[key], 64)
			return v
		}
	}
	return errors.Join(
		m.Gauge(metrics.SandboxesAlive, "Sandboxes that exist on the node: warm, idle or running.",
			func() float64 { return float64(n.rt.Sandboxes()) }),
		m.LabelledGauge(metrics.WarmSandboxes, "Booted sandboxes waiting for an execution, by language.", "language",
			func() map[string]float64 {
				st := n.exec.PoolStats()
				out := map[string]float64{}
				for _, l := range n.exec.Catalog().List() {
					out[l.ID] = float64(st.Warm[l.ID] + st.WarmNetworked[l.ID])
				}
				for l, k := range st.Warm {
					out[l] = float64(k + st.WarmNetworked[l])
				}
				return out
			}),
		m.LabelledGauge(metrics.WarmSandboxesTarget, "How many sandboxes the pool keeps warm, by language (0: not pooled).", "language",
			func() map[string]float64 {
				pc := n.exec.PoolConfig()
				out := map[string]float64{}
				for _, l := range n.exec.Catalog().List() {
					out[l.ID] = float64(pc.Warm[l.ID])
					if n.egr != nil {
						out[l.ID] += float64(pc.WarmNetworked[l.ID])
					}
				}
				return out
			}),
		m.Gauge(metrics.SessionsOpen, "Sessions the node holds.",
			func() float64 { return float64(n.sess.Open()) }),
		m.LabelledGauge(metrics.Jobs, "The cell's async jobs by state; every node of the cell reports the same.", "state",
			func() map[string]float64 {
				out := map[string]float64{}
				for st, k := range n.store.JobCounts() {
					out[string(st)] = float64(k)
				}
				return out
			}),
		m.LabelledGauge(metrics.RaftState, "1 for the node's raft state, 0 for the others.", "state",
			func() map[string]float64 {
				now := strings.ToLower(n.store.Stats()["state"])
				out := map[string]float64{}
				for _, s := range raftStates {
					out[s] = 0
				}
				out[now] = 1
				return out
			}),
		m.Gauge(metrics.RaftCommitIndex, "The raft log's commit index as the node knows it.", raftStat("commit_index")),
		m.Gauge(metrics.RaftAppliedIndex, "The last raft log index the node applied.", raftStat("applied_index")),
		m.LabelledGauge(metrics.GossipMembers, "Members of the gossip pool the node knows of, by state.", "state",
			func() map[string]float64 {
				out := metrics.GossipStates()
				for _, mem := range n.agent.Members() {
					out[mem.State.String()]++
				}
				return out
			}),
	)
}
