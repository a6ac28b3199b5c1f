package meter

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/usage"
)

// BenchmarkFlush measures how fast a flusher drains an outbox of b.N
// entries into stripe-mock (through the recording receiver) at a few
// concurrencies. The figures are in DESIGN.md:
//
//	go test -run '^$' -bench Flush -benchtime 2000x ./billing/meter/
func BenchmarkFlush(b *testing.B) {
	for _, conc := range []int{1, 8, 32} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			rc := newReceiver(b)
			l, err := usage.Open(filepath.Join(b.TempDir(), "usage.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			for i := range b.N {
				e := usage.MeterEntry{ID: fmt.Sprintf("exec_%d", i), Customer: "cus_bench", Value: 1, Time: time.Now()}
				if _, err := l.Record("acct_bench", testMonth, 1, e); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			_, release, err := Start(l, Config{SecretKey: testKey, EventName: testEvent, APIBase: rc.URL(), Concurrency: conc})
			if err != nil {
				b.Fatal(err)
			}
			defer release()
			waitFor(b, time.Minute, "the outbox to empty", func() bool {
				s, err := l.OutboxStats()
				return err == nil && s.Pending == 0
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
