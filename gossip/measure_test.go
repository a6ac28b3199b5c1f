package gossip

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestMeasureDetection measures what DESIGN.md reports: how long a killed
// member of a pool of three nodes and a gateway stays alive to the others
// with DefaultTiming, over GOSSIP_MEASURE rounds, and whether any member
// that was not killed was ever declared dead meanwhile (a spurious death).
// It is slow, so it runs only when asked:
//
//	GOSSIP_MEASURE=10 go test ./gossip/ -run TestMeasureDetection -v
func TestMeasureDetection(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("GOSSIP_MEASURE"))
	if rounds <= 0 {
		t.Skip("set GOSSIP_MEASURE=<rounds> to measure failure detection")
	}
	bound := DefaultTiming().DetectionBound(4)
	gw := start(t, Config{Name: "gw", Meta: Meta{Role: RoleGateway}})
	events := record(gw)
	stay := []*Agent{gw}
	for i := range 2 {
		stay = append(stay, start(t, Config{Name: fmt.Sprint("stay", i), Join: []string{gw.Addr()}, Meta: nodeMeta(1)}))
	}
	var took []time.Duration
	for r := range rounds {
		name := fmt.Sprint("victim", r)
		victim := start(t, Config{Name: name, Join: []string{gw.Addr()}, Meta: nodeMeta(1)})
		all := append(slices.Clone(stay), victim)
		for _, a := range all {
			waitFor(t, 10*time.Second, "everyone sees "+a.Name(), everyone(all, a.Name(), Alive))
		}
		time.Sleep(2 * time.Second) // probes settle into their rounds
		killed := time.Now()
		_ = victim.Shutdown()
		waitFor(t, 5*bound, name+" dead to all", everyone(stay, name, Dead))
		took = append(took, time.Since(killed))
	}
	for _, a := range stay {
		if events.count(EventFail, a.Name()) > 0 {
			t.Errorf("spurious death of %s", a.Name())
		}
	}
	slices.Sort(took)
	t.Logf("detection over %d rounds: min %v, median %v, max %v (bound %v)",
		len(took), took[0].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond), bound)
}
