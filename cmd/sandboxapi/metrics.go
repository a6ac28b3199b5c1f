package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metricsPath is where the operator listener (metrics_listen) serves the
// Prometheus metrics; it serves nothing else.
const metricsPath = "/metrics"

// nodeRegistry is a node process's one registry (package cell/metrics):
// the node's metrics, and the Go runtime's and the process's when the
// process has no gateway, whose Caddy registry has those already.
func nodeRegistry(withRuntime bool) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	if withRuntime {
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	return reg
}

// serveMetrics serves g at metricsPath on addr, the operator's listener,
// for the life of the process; none when addr is empty. The address is
// bound before it returns, so a port in use is the command's error.
func serveMetrics(addr string, g prometheus.Gatherer, logger *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+metricsPath, promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics listener", "err", err)
		}
	}()
	logger.Info("start-up: metrics listening", "addr", ln.Addr().String(), "path", metricsPath)
	return func() { srv.Close() }, nil
}
