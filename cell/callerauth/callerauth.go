// Package callerauth is the trust contract between the edge gateway and a cell
// node: the gateway authenticates the client, then tells the cell who is calling
// in internal headers that it signs with a secret only the two of them hold. A
// cell refuses any request whose headers are unsigned, forged or stale, so a
// client that reaches a cell directly, or sends its own internal headers through
// the gateway, gets nothing.
package callerauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Internal headers. Every header that starts with Prefix is the gateway's to
// set: Strip removes any a client sent.
const (
	Prefix          = "X-Sandboxapi-Internal-"
	HeaderAccount   = Prefix + "Account"
	HeaderPlan      = Prefix + "Plan"
	HeaderWebhook   = Prefix + "Webhook-Secret"
	HeaderTimestamp = Prefix + "Timestamp"
	HeaderSignature = Prefix + "Signature"
)

// HeaderExecutions is set by a cell on its response: how many executions
// the request ran (1, or a batch's size), for the gateway's monthly quota.
// The gateway removes it before the response reaches the client.
const HeaderExecutions = Prefix + "Executions"

// HeaderEgressBytes is set by a cell on the response of networked
// executions: the bytes they moved through the egress proxy, for the
// gateway's usage ledger. Removed like HeaderExecutions.
const HeaderEgressBytes = Prefix + "Egress-Bytes"

// WebhookMessage is the message of the HMAC that derives a caller's webhook
// signing secret from their API key (see WebhookSecret).
const WebhookMessage = "sandboxapi-webhook-v1"

// MaxSkew is how old (or how far in the future) a signature may be. It bounds
// the replay window of a leaked set of headers.
const MaxSkew = 5 * time.Minute

// Sentinel errors returned by Verify.
var (
	ErrUnsigned     = errors.New("callerauth: request carries no gateway signature")
	ErrBadSignature = errors.New("callerauth: gateway signature does not match")
	ErrStale        = errors.New("callerauth: gateway signature is too old or from the future")
)

// NodeCaller is the AccountID a cell node signs its calls to another node
// with (package cluster): the cell's internal routes take only it. It
// cannot be a real account's id (those are "acct_..." and never start with
// "@"), so no client's request, signed by the gateway for its account, can
// pass for a node's.
const NodeCaller = "@cell-node"

// GatewayCaller is the AccountID a gateway signs its own calls to a node
// with, not on any account's behalf: the accounts table's routes
// (billing/directory) take only it. Like NodeCaller, no account id can
// spell it.
const GatewayCaller = "@gateway"

// Caller is who the gateway says is calling.
type Caller struct {
	AccountID string
	Plan      string
	// WebhookSecret signs this caller's webhook callbacks. Only the gateway
	// sees API keys, so it derives the secret and hands it to the cell.
	WebhookSecret string
}

// WebhookSecret derives the webhook signing secret of an API key:
// hex(HMAC-SHA256(key = API key, message = WebhookMessage)). Users compute
// the same in a few lines to verify X-SandboxAPI-Signature.
func WebhookSecret(apiKey string) string {
	m := hmac.New(sha256.New, []byte(apiKey))
	m.Write([]byte(WebhookMessage))
	return hex.EncodeToString(m.Sum(nil))
}

// Strip removes every internal header from h. The gateway calls it on every
// request before anything else, so only what it sets itself reaches a cell.
func Strip(h http.Header) {
	for name := range h {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), Prefix) {
			delete(h, name)
		}
	}
}

// Sign sets the internal headers for c on h, signed with secret at now.
func Sign(h http.Header, secret []byte, c Caller, now time.Time) {
	ts := strconv.FormatInt(now.Unix(), 10)
	h.Set(HeaderAccount, c.AccountID)
	h.Set(HeaderPlan, c.Plan)
	h.Set(HeaderWebhook, c.WebhookSecret)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, mac(secret, c, ts))
}

// Verify checks the internal headers on h and returns the caller they name.
func Verify(h http.Header, secret []byte, now time.Time) (Caller, error) {
	sig := h.Get(HeaderSignature)
	if sig == "" {
		return Caller{}, ErrUnsigned
	}
	c := Caller{AccountID: h.Get(HeaderAccount), Plan: h.Get(HeaderPlan), WebhookSecret: h.Get(HeaderWebhook)}
	ts := h.Get(HeaderTimestamp)
	if !hmac.Equal([]byte(sig), []byte(mac(secret, c, ts))) {
		return Caller{}, ErrBadSignature
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return Caller{}, fmt.Errorf("%w: timestamp %q", ErrBadSignature, ts)
	}
	if d := now.Sub(time.Unix(unix, 0)); d > MaxSkew || d < -MaxSkew {
		return Caller{}, ErrStale
	}
	return c, nil
}

func mac(secret []byte, c Caller, ts string) string {
	m := hmac.New(sha256.New, secret)
	// Newlines cannot occur in header values, so the fields cannot run together.
	fmt.Fprintf(m, "%s\n%s\n%s\n%s", c.AccountID, c.Plan, c.WebhookSecret, ts)
	return hex.EncodeToString(m.Sum(nil))
}
