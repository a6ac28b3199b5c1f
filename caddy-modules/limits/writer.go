package limits

import (
	"context"
	"crypto/rand"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/sandboxapi/sandboxapi/billing/usage"
	"github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	"github.com/sandboxapi/sandboxapi/caddy-modules/request"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

// countingWriter is the ResponseWriter the rest of the chain (the reverse
// proxy to the cell) writes to. When the final status goes out it records
// the executions the cell reported in callerauth.HeaderExecutions, updates
// X-Quota-Remaining to match, and removes every internal header first, so
// nothing the cell meant for the gateway reaches the client. A count the
// cell sends as a trailer instead (one known only when a stream ends) is
// recorded and removed by finish. The execution or job id the cell reports
// (api.HeaderExecutionID) goes into the request's access log line, and
// names the meter event of a Stripe account's executions.
//
// The count is on disk before the status goes out (or, for a trailer,
// before the trailers do): Handler.count waits for the ledger's shared
// commit, so a gateway that crashes has never answered for executions it
// did not count.
//
// It deliberately does not implement io.ReaderFrom: a ReadFrom passed
// straight to the underlying writer would send the headers without going
// through WriteHeader here. Flush keeps streaming working, and Unwrap lets
// http.ResponseController reach the underlying writer for everything else
// (hijacking, deadlines).
type countingWriter struct {
	rw      http.ResponseWriter
	ctx     context.Context // the request's, for its access log line
	h       *Handler
	account string // "" for a request sandboxapi_auth passed on without a key
	month   string
	quota   int64
	used    int64 // this gateway's count for the account's month, this request's included once counted
	others  int64 // what other gateways counted, as this one knows it
	counted int64 // what this request counted

	wroteHeader bool
	executionID string // what the cell reported, kept past stripInternal
	adds        int    // counts recorded for this request so far
}

// Header returns the response header map.
func (cw *countingWriter) Header() http.Header {
	return cw.rw.Header()
}

// WriteHeader records the reported executions, strips internal headers and
// sends the status.
func (cw *countingWriter) WriteHeader(code int) {
	if cw.wroteHeader {
		cw.rw.WriteHeader(code) // superfluous; the underlying writer logs it
		return
	}
	hdr := cw.rw.Header()
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		// An informational response; the final one follows. The proxy puts
		// the cell's 1xx headers in the map for it, so strip them here too.
		stripInternal(hdr)
		cw.rw.WriteHeader(code)
		return
	}
	cw.wroteHeader = true
	n := cw.executions(hdr, callerauth.HeaderExecutions)
	cw.addEgress(cw.executions(hdr, callerauth.HeaderEgressBytes))
	if id := hdr.Get(api.HeaderExecutionID); id != "" {
		cw.executionID = id
		request.Log(cw.ctx, zap.String("execution_id", truncate(id, maxLoggedID)))
	}
	stripInternal(hdr)
	if cw.add(n) {
		hdr.Set(HeaderQuotaRemaining, strconv.FormatInt(max(cw.quota-cw.others-cw.used, 0), 10))
	}
	cw.rw.WriteHeader(code)
}

// Write sends b, and the headers first if nothing has been sent yet.
func (cw *countingWriter) Write(b []byte) (int, error) {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	return cw.rw.Write(b)
}

// Flush sends whatever is buffered to the client (http.Flusher).
func (cw *countingWriter) Flush() {
	_ = cw.FlushError()
}

// FlushError is Flush reporting failure; http.ResponseController prefers it.
func (cw *countingWriter) FlushError() error {
	if !cw.wroteHeader {
		cw.WriteHeader(http.StatusOK)
	}
	return http.NewResponseController(cw.rw).Flush()
}

// Unwrap returns the underlying ResponseWriter, for http.ResponseController.
func (cw *countingWriter) Unwrap() http.ResponseWriter {
	return cw.rw
}

// finish runs after the rest of the chain has returned, before net/http
// sends trailers: it records a count and egress bytes the cell sent as
// trailers (a stream's, known only at its end) and removes internal
// trailers.
func (cw *countingWriter) finish() {
	hdr := cw.rw.Header()
	n := cw.executions(hdr, callerauth.HeaderExecutions) +
		cw.executions(hdr, http.TrailerPrefix+callerauth.HeaderExecutions)
	egress := cw.executions(hdr, callerauth.HeaderEgressBytes) +
		cw.executions(hdr, http.TrailerPrefix+callerauth.HeaderEgressBytes)
	stripInternal(hdr)
	cw.add(n)
	cw.addEgress(egress)
}

// add records n executions the cell reported, and reports whether it did.
// A request without an account (one sandboxapi_auth passed on without a
// key) cannot have run anything, as the cell answers it before any route
// runs; a count for one is logged, not recorded against nobody.
func (cw *countingWriter) add(n int64) bool {
	if n <= 0 {
		return false
	}
	if cw.account == "" {
		cw.h.logger.Error("the cell reported executions for a request without an account; not counted", zap.Int64("executions", n))
		return false
	}
	cw.adds++
	cw.counted += n
	cw.used = cw.h.count(cw.account, cw.month, cw.used, n, cw.meterEntries(n)...)
	return true
}

// addEgress records the egress bytes the cell reported. They are usage
// to report, not a quota: recorded without waiting for the disk.
func (cw *countingWriter) addEgress(n int64) {
	if n <= 0 || cw.account == "" || cw.h.ledger == nil {
		return
	}
	if _, err := cw.h.ledger.RecordEgress(cw.account, cw.month, n); err != nil {
		cw.h.logger.Error("recording egress bytes in the usage ledger", zap.String("account", cw.account),
			zap.String("month", cw.month), zap.Int64("egress_bytes", n), zap.Error(err))
	}
}

// meterEntries returns what the add of n executions owes Stripe: nothing
// for an account that is not billed through Stripe, else one entry of
// value n. One entry, not n, because a batch or an MCP call reports its
// executions as one number under one id (or none): a single event is one
// Stripe call instead of up to a batch's 200, and a batch is billed whole
// or not yet, never in part. The identifier is the execution id the cell
// reported, or, for a response that names none, one made here; a second
// count on one response (a trailer after a header) gets "#2".
func (cw *countingWriter) meterEntries(n int64) []usage.MeterEntry {
	customer, _ := caddyhttp.GetVar(cw.ctx, auth.VarStripeCustomer).(string)
	if customer == "" {
		return nil
	}
	if !cw.h.metered() {
		return nil
	}
	if len(customer) > usage.MaxCustomerLen {
		// Not a Stripe customer id; the ledger would refuse the count
		// with it, and the count matters more.
		cw.h.logger.Error("Stripe customer id too long; executions counted but not metered",
			zap.String("account", cw.account), zap.Int("length", len(customer)), zap.Int64("executions", n))
		return nil
	}
	id := cw.executionID
	if id == "" || len(id) > maxMeterBaseLen {
		id = "gw_" + strings.ToLower(rand.Text())
	}
	if cw.adds > 1 {
		id += "#" + strconv.Itoa(cw.adds)
	}
	return []usage.MeterEntry{{ID: id, Customer: customer, Value: n, Time: cw.h.now().UTC()}}
}

// maxMeterBaseLen leaves room in Stripe's 100-byte identifier for a "#n"
// suffix; the cell's ids are far shorter.
const maxMeterBaseLen = usage.MaxMeterIDLen - 8

// executions parses the count in header name of hdr; 0 when there is none
// or it is not a non-negative integer.
func (cw *countingWriter) executions(hdr http.Header, name string) int64 {
	vv := hdr.Values(name)
	if len(vv) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(vv[0]), 10, 64)
	if err != nil || n < 0 {
		cw.h.logger.Warn("cell reported an invalid execution count; not counted",
			zap.String("account", cw.account), zap.Strings("value", vv))
		return 0
	}
	return n
}

// stripInternal removes internal headers from hdr: as headers, as trailers
// ("Trailer:"-prefixed keys) and from the Trailer announcement.
func stripInternal(hdr http.Header) {
	for name := range hdr {
		if isInternal(strings.TrimPrefix(name, http.TrailerPrefix)) {
			delete(hdr, name)
		}
	}
	announced := hdr.Values("Trailer")
	if len(announced) == 0 {
		return
	}
	var keep []string
	for _, v := range announced {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.TrimSpace(name); name != "" && !isInternal(name) {
				keep = append(keep, name)
			}
		}
	}
	if len(keep) == 0 {
		hdr.Del("Trailer")
		return
	}
	hdr.Set("Trailer", strings.Join(keep, ", "))
}

// maxLoggedID bounds the execution id the cell reports, as logged.
const maxLoggedID = 128

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func isInternal(name string) bool {
	return strings.HasPrefix(http.CanonicalHeaderKey(name), callerauth.Prefix)
}
