package main

import (
	"context"
	"flag"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/bench"
)

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	requests := fs.Int("n", 50, "sequential requests per language and method")
	conc := fs.Int("c", 8, "parallel clients in the throughput test")
	dur := fs.Duration("d", 20*time.Second, "length of each throughput test")
	runscPath := fs.String("runsc", "", "static runsc (default: $SANDBOXAPI_RUNSC, else runsc beside this binary)")
	initPath := fs.String("init", "", "sandbox init (default: $SANDBOXAPI_INIT, else sandbox-init beside this binary)")
	settle := fs.Duration("settle", bench.DefaultSettle, "the longest to wait for a quiet machine before each measured part (a smoke run on a busy machine: a second or two)")
	parts := fs.String("parts", strings.Join(bench.Parts, ","), "comma-separated sections to run")
	zygote := fs.Bool("python-zygote", false, "start the service with --python-zygote, to compare")
	if err := parseFlags(fs, args, "bench [flags]\n\nStarts the service itself and prints one table of latencies and CPU,\nbeside native, bubblewrap and runsc do baselines (README, \"Benchmark\")."); err != nil {
		return err
	}
	rs, err := besideBinary(*runscPath, "SANDBOXAPI_RUNSC", "runsc")
	if err != nil {
		return err
	}
	in, err := besideBinary(*initPath, "SANDBOXAPI_INIT", "sandbox-init")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	_, err = bench.Run(ctx, bench.Config{
		Binary: self, Runsc: rs, Init: in,
		Parts: strings.Split(*parts, ","), Settle: *settle, PythonZygote: *zygote,
		Requests: *requests, Concurrency: *conc, Duration: *dur, Out: os.Stdout,
	})
	return err
}
