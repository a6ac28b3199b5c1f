package usage

import (
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkGroupCommit measures what waiting for the disk costs a caller:
// callers goroutines Add (the gateway's way: wait for the shared commit)
// or Record (answer at once) one execution each, with a meter entry, as
// fast as they can. It reports each call's latency (mean, p50, p99),
// commits per second and calls per commit. The figures are in DESIGN.md:
//
//	go test -run '^$' -bench GroupCommit -benchtime 2000x ./billing/usage/
func BenchmarkGroupCommit(b *testing.B) {
	for _, wait := range []bool{true, false} {
		for _, callers := range []int{1, 8, 64, 256} {
			name := fmt.Sprintf("record/callers=%d", callers)
			if wait {
				name = fmt.Sprintf("add/callers=%d", callers)
			}
			b.Run(name, func(b *testing.B) { benchGroupCommit(b, callers, wait) })
		}
	}
}

func benchGroupCommit(b *testing.B, callers int, wait bool) {
	l, err := Open(filepath.Join(b.TempDir(), "usage.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				e := MeterEntry{ID: fmt.Sprintf("exec_%d", i), Customer: "cus_bench", Value: 1, Time: start}
				t0 := time.Now()
				var err error
				if wait {
					_, err = l.Add("acct_bench", "2025-03", 1, e)
				} else {
					_, err = l.Record("acct_bench", "2025-03", 1, e)
				}
				lat[i] = time.Since(t0)
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := l.Sync(); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()

	l.mu.Lock()
	commits := l.commits
	l.mu.Unlock()
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	µs := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(µs(sum)/float64(b.N), "µs-mean")
	b.ReportMetric(µs(lat[b.N/2]), "µs-p50")
	b.ReportMetric(µs(lat[b.N*99/100]), "µs-p99")
	b.ReportMetric(float64(commits)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(b.N)/float64(commits), "calls/commit")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
}
