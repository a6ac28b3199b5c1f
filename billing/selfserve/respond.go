package selfserve

import (
	"errors"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"strconv"
	"strings"

	"github.com/stripe/stripe-go/v76"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// maxBody bounds the JSON and form bodies of signups: an email and a plan
// name fit many times over.
const maxBody = 16 << 10

// maxEmail is the longest address SMTP carries (RFC 5321's 254 octets of
// a path, less its angle brackets).
const maxEmail = 254

// errStripe is what a client hears when Stripe failed us.
var errStripe = apierror.New(apierror.Unavailable, "Stripe could not be reached; retry in a few seconds")

// retryAfter is the Retry-After of a 503: every 503 of the API says when
// to retry.
const retryAfter = "5"

func errNotFound(path string) error {
	return apierror.New(apierror.NotFound, "there is no %s", path)
}

func errMethod(method, path string) error {
	return apierror.New(apierror.MethodNotAllowed, "%s does not take %s", path, method)
}

// writeJSON answers with status and body. Nothing self-serve answers may
// be cached: it names accounts, keys and one-time URLs.
func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Cache-Control", "no-store")
	apierror.WriteBody(w, status, body)
}

// fail answers err in the project's error shape: a refusal as it is, and
// anything else, logged, as an internal error that reveals nothing.
func (s *Service) fail(w http.ResponseWriter, err error) {
	if apierror.Gone(err) {
		return
	}
	e := apierror.Public(err, s.logger)
	if e.Status() == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, e.Status(), e.Body())
}

// stripeFailure logs a failed Stripe call and returns what the client is
// told: a 503 when Stripe is down, slow or limiting us (retrying helps), and
// an internal error when Stripe refused the request, which is a
// configuration of ours (a price id that does not exist, a wrong key).
func (s *Service) stripeFailure(what string, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) && se.HTTPStatusCode >= 400 && se.HTTPStatusCode < 500 &&
		se.HTTPStatusCode != http.StatusTooManyRequests && se.HTTPStatusCode != http.StatusConflict {
		s.logger.Error("selfserve: Stripe refused "+what+"; check the Stripe key and the plans' stripe_price_id",
			"status", se.HTTPStatusCode, "type", se.Type, "code", se.Code, "param", se.Param, "msg", se.Msg, "request_id", se.RequestID)
		return apierror.New(apierror.Internal, "the payment provider refused the request; this is ours to fix, please report it")
	}
	s.logger.Warn("selfserve: Stripe failed "+what, "err", err)
	return errStripe
}

// parseEmail returns the address if raw is one plain address (no display
// name, a dotted domain, as Stripe requires of customer_email).
func parseEmail(raw string) (string, error) {
	e := strings.TrimSpace(raw)
	if e == "" {
		return "", apierror.New(apierror.MissingField, "email is required")
	}
	if len(e) > maxEmail {
		return "", apierror.New(apierror.FieldTooLong, "email is longer than %d bytes", maxEmail)
	}
	a, err := mail.ParseAddress(e)
	at := strings.LastIndexByte(e, '@')
	if err != nil || a.Name != "" || a.Address != e || at < 1 ||
		!strings.Contains(e[at+1:], ".") || strings.HasSuffix(e, ".") || strings.HasPrefix(e[at+1:], ".") {
		return "", apierror.New(apierror.InvalidField, "email %q is not an email address (name@example.com)", e)
	}
	return e, nil
}

// remoteHost is the client address of a request served directly.
func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limitKey is the rate limit key of a client address: an IPv6 address
// counts by its /64, which one host or home usually holds whole, so
// walking through it does not multiply the limit.
func limitKey(kind, addr string) string {
	if ip, err := netip.ParseAddr(addr); err == nil && ip.Is6() && !ip.Is4In6() {
		p, _ := ip.Prefix(64)
		addr = p.String()
	}
	return "selfserve:" + kind + ":" + addr
}

// retryAfterSeconds is a Retry-After value for a window that resets at
// reset (Unix seconds), at least 1.
func retryAfterSeconds(reset, now int64) string {
	d := reset - now
	if d < 1 {
		d = 1
	}
	return strconv.FormatInt(d, 10)
}
