package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/directory"
	"github.com/sandboxapi/sandboxapi/billing/directory/directorytest"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
)

var testSecret = string(directorytest.Secret)

type fixture struct {
	home             *directorytest.Home
	dir              *directory.Directory // the fixture's own gateway, to make accounts with
	secretPath       string
	pro, basic       accounts.Account
	proKey, basicKey string
}

// newFixture starts a home cell with two accounts and writes the cell
// secret to a file.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{home: directorytest.StartHome(t), secretPath: filepath.Join(dir, "cell.secret")}
	if err := os.WriteFile(f.secretPath, []byte(testSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.dir = f.home.Gateway(t, "fixture")
	ctx := context.Background()
	var err error
	if f.pro, err = f.dir.CreateAccount(ctx, accounts.NewAccount{Name: "Ada", Plan: "pro"}); err != nil {
		t.Fatal(err)
	}
	if f.basic, err = f.dir.CreateAccount(ctx, accounts.NewAccount{Name: "Bob", Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	k, err := f.dir.IssueKey(ctx, f.pro.ID)
	if err != nil {
		t.Fatal(err)
	}
	f.proKey = k.APIKey
	if k, err = f.dir.IssueKey(ctx, f.basic.ID); err != nil {
		t.Fatal(err)
	}
	f.basicKey = k.APIKey
	return f
}

// accounts is the module's "accounts" object for gateway gw.
func (f *fixture) accounts(gw string) map[string]any {
	return map[string]any{"nodes": []string{f.home.Addr}, "gateway": gw, "cell_secret_file": f.secretPath}
}

// cfg is a module config on f's home cell, with more options.
func (f *fixture) cfg(more map[string]any) map[string]any {
	c := map[string]any{"accounts": f.accounts("gw-test"), "cell_secret_file": f.secretPath}
	for k, v := range more {
		c[k] = v
	}
	return c
}

// sync waits until h's copy of the accounts has everything f wrote.
func (f *fixture) sync(t *testing.T, h *Handler) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.dir.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	for h.dir.Index() < f.dir.Index() {
		if ctx.Err() != nil {
			t.Fatalf("the module's copy is at %d, the fixture wrote %d", h.dir.Index(), f.dir.Index())
		}
		time.Sleep(time.Millisecond)
	}
}

// load provisions the module the way Caddy does, from its JSON config.
func load(t *testing.T, cfg map[string]any) (*Handler, context.CancelFunc) {
	t.Helper()
	h, cancel, err := tryLoad(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h, cancel
}

// loadSynced is load, then waits for the module's copy of f's accounts.
func (f *fixture) load(t *testing.T, more map[string]any) *Handler {
	t.Helper()
	h, _ := load(t, f.cfg(more))
	f.sync(t, h)
	return h
}

func tryLoad(t *testing.T, cfg map[string]any) (*Handler, context.CancelFunc, error) {
	t.Helper()
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	mod, err := ctx.LoadModuleByID("http.handlers.sandboxapi_auth", raw)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	t.Cleanup(cancel) // runs Cleanup on the module; cancelling twice is harmless
	return mod.(*Handler), cancel, nil
}

type seen struct {
	called  bool
	header  http.Header
	account any
	plan    any
}

func serve(h *Handler, req *http.Request) (*httptest.ResponseRecorder, *seen) {
	vars := make(map[string]any)
	req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars))
	s := &seen{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		s.called = true
		s.header = r.Header.Clone()
		s.account = caddyhttp.GetVar(r.Context(), VarAccountID)
		s.plan = caddyhttp.GetVar(r.Context(), VarPlan)
		w.WriteHeader(http.StatusOK)
		return nil
	})
	rec := httptest.NewRecorder()
	if err := h.ServeHTTP(rec, req, next); err != nil {
		rec.Code = -1
		rec.Body.WriteString("handler error: " + err.Error())
	}
	return rec, s
}

func TestServeHTTP(t *testing.T) {
	f := newFixture(t)
	const proxySecret = "rapid-proxy-secret"
	withProxy := f.load(t, map[string]any{"rapidapi_proxy_secret": proxySecret})
	noProxy := f.load(t, nil)

	tests := []struct {
		name     string
		h        *Handler
		headers  map[string]string
		status   int
		code     apierror.Code     // error code when status != 200
		want     *accounts.Account // caller the cell must see when status == 200
		wantPlan string
	}{
		{name: "no key", h: withProxy, status: 401, code: apierror.MissingAPIKey},
		{name: "basic credentials that are not a key", h: withProxy, headers: map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, status: 401, code: apierror.InvalidAPIKey},
		{name: "basic credentials that do not decode", h: withProxy, headers: map[string]string{"Authorization": "Basic !!!"}, status: 401, code: apierror.MissingAPIKey},
		{name: "empty basic credentials", h: withProxy, headers: map[string]string{"Authorization": "Basic " + basic(":")}, status: 401, code: apierror.MissingAPIKey},
		{name: "basic: the key as password", h: withProxy, headers: map[string]string{"Authorization": "Basic " + basic("apikey:"+f.proKey)}, status: 200, want: &f.pro},
		{name: "basic: the key as user, no password", h: withProxy, headers: map[string]string{"Authorization": "BASIC " + basic(f.basicKey+":")}, status: 200, want: &f.basic},
		{name: "basic: the key as user, no colon", h: withProxy, headers: map[string]string{"Authorization": "Basic " + basic(f.basicKey)}, status: 200, want: &f.basic},
		{name: "basic: the password wins over the user", h: withProxy, headers: map[string]string{"Authorization": "Basic " + basic(f.proKey+":"+f.basicKey)}, status: 200, want: &f.basic},
		{name: "X-Auth-Token, Judge0's header", h: withProxy, headers: map[string]string{"X-Auth-Token": f.proKey}, status: 200, want: &f.pro},
		{name: "X-API-Key wins over X-Auth-Token", h: withProxy, headers: map[string]string{"X-API-Key": f.basicKey, "X-Auth-Token": f.proKey}, status: 200, want: &f.basic},
		{name: "X-API-Key wins over Basic credentials (Caddy's basic_auth in front)", h: withProxy, headers: map[string]string{"X-API-Key": f.basicKey, "Authorization": "Basic " + basic("operator:hunter2")}, status: 200, want: &f.basic},
		{name: "X-Auth-Token wins over Basic credentials", h: withProxy, headers: map[string]string{"X-Auth-Token": f.proKey, "Authorization": "Basic " + basic("x:"+f.basicKey)}, status: 200, want: &f.pro},
		{name: "empty bearer", h: withProxy, headers: map[string]string{"Authorization": "Bearer   "}, status: 401, code: apierror.MissingAPIKey},
		{name: "empty X-API-Key", h: withProxy, headers: map[string]string{"X-API-Key": " "}, status: 401, code: apierror.MissingAPIKey},
		{name: "unknown X-API-Key", h: withProxy, headers: map[string]string{"X-API-Key": "sk_nope"}, status: 401, code: apierror.InvalidAPIKey},
		{name: "unknown bearer", h: withProxy, headers: map[string]string{"Authorization": "Bearer sk_nope"}, status: 401, code: apierror.InvalidAPIKey},
		{name: "bearer", h: withProxy, headers: map[string]string{"Authorization": "Bearer " + f.proKey}, status: 200, want: &f.pro},
		{name: "bearer scheme is case-insensitive", h: withProxy, headers: map[string]string{"Authorization": "bearer " + f.proKey}, status: 200, want: &f.pro},
		{name: "X-API-Key", h: withProxy, headers: map[string]string{"X-API-Key": f.basicKey}, status: 200, want: &f.basic},
		{name: "sandbox token", h: withProxy, headers: map[string]string{"X-Access-Token": callerauth.SandboxToken([]byte(testSecret), f.pro.ID, "sess_n1_a"), "E2b-Sandbox-Id": "sess_n1_a"}, status: 200, want: &f.pro, wantPlan: "pro"},
		{name: "sandbox token beside E2B's Basic user", h: withProxy, headers: map[string]string{"X-Access-Token": callerauth.SandboxToken([]byte(testSecret), f.basic.ID, "sess_n1_a"), "E2b-Sandbox-Id": "sess_n1_a", "Authorization": "Basic " + basic("user:")}, status: 200, want: &f.basic},
		{name: "sandbox token as the traffic token", h: withProxy, headers: map[string]string{"E2b-Traffic-Access-Token": callerauth.SandboxToken([]byte(testSecret), f.pro.ID, "sess_n1_a"), "E2b-Sandbox-Id": "sess_n1_a"}, status: 200, want: &f.pro},
		{name: "sandbox token for another sandbox", h: withProxy, headers: map[string]string{"X-Access-Token": callerauth.SandboxToken([]byte(testSecret), f.pro.ID, "sess_n1_a"), "E2b-Sandbox-Id": "sess_n1_b"}, status: 401, code: apierror.InvalidAPIKey},
		{name: "sandbox token signed with another secret", h: withProxy, headers: map[string]string{"X-Access-Token": callerauth.SandboxToken([]byte("another secret of 16+"), f.pro.ID, "sess_n1_a"), "E2b-Sandbox-Id": "sess_n1_a"}, status: 401, code: apierror.InvalidAPIKey},
		{name: "sandbox token of no account", h: withProxy, headers: map[string]string{"X-Access-Token": callerauth.SandboxToken([]byte(testSecret), "acct_gone", "sess_n1_a"), "E2b-Sandbox-Id": "sess_n1_a"}, status: 401, code: apierror.InvalidAPIKey},
		{name: "access token without a sandbox id is not a key", h: withProxy, headers: map[string]string{"X-Access-Token": callerauth.SandboxToken([]byte(testSecret), f.pro.ID, "sess_n1_a")}, status: 401, code: apierror.MissingAPIKey},
		{
			name:    "RapidAPI with proxy secret",
			h:       withProxy,
			headers: map[string]string{"X-RapidAPI-Key": f.proKey, "X-RapidAPI-Proxy-Secret": proxySecret},
			status:  200, want: &f.pro,
		},
		{name: "RapidAPI without proxy secret", h: withProxy, headers: map[string]string{"X-RapidAPI-Key": f.proKey}, status: 403, code: apierror.InvalidProxySecret},
		{
			name:    "RapidAPI with wrong proxy secret",
			h:       withProxy,
			headers: map[string]string{"X-RapidAPI-Key": f.proKey, "X-RapidAPI-Proxy-Secret": proxySecret + "x"},
			status:  403, code: apierror.InvalidProxySecret,
		},
		{
			name:    "RapidAPI unknown key with proxy secret",
			h:       withProxy,
			headers: map[string]string{"X-RapidAPI-Key": "sk_nope", "X-RapidAPI-Proxy-Secret": proxySecret},
			status:  401, code: apierror.InvalidAPIKey,
		},
		{name: "RapidAPI when no proxy secret is configured", h: noProxy, headers: map[string]string{"X-RapidAPI-Key": f.basicKey}, status: 200, want: &f.basic},
		{
			name:    "X-RapidAPI-Key wins over Bearer",
			h:       noProxy,
			headers: map[string]string{"X-RapidAPI-Key": f.proKey, "Authorization": "Bearer " + f.basicKey},
			status:  200, want: &f.pro,
		},
		{
			name:    "Bearer wins over X-API-Key",
			h:       noProxy,
			headers: map[string]string{"Authorization": "Bearer " + f.basicKey, "X-API-Key": f.proKey},
			status:  200, want: &f.basic,
		},
		{
			name:    "an invalid preferred key is not rescued by a valid later one",
			h:       noProxy,
			headers: map[string]string{"X-RapidAPI-Key": "sk_nope", "X-API-Key": f.proKey},
			status:  401, code: apierror.InvalidAPIKey,
		},
		{
			name: "client-sent internal headers are replaced",
			h:    withProxy,
			headers: map[string]string{
				"X-API-Key":                      f.basicKey,
				"X-Sandboxapi-Internal-Account":  f.pro.ID,
				"X-Sandboxapi-Internal-Plan":     "mega",
				"X-Sandboxapi-Internal-Whatever": "1",
			},
			status: 200, want: &f.basic,
		},
		{
			name: "client-sent internal headers without a key",
			h:    withProxy,
			headers: map[string]string{
				"X-Sandboxapi-Internal-Account":   f.pro.ID,
				"X-Sandboxapi-Internal-Plan":      "mega",
				"X-Sandboxapi-Internal-Timestamp": "1",
				"X-Sandboxapi-Internal-Signature": "forged",
			},
			status: 401, code: apierror.MissingAPIKey,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(`{}`))
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec, s := serve(tt.h, req)

			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			for name := range req.Header {
				if strings.HasPrefix(name, callerauth.Prefix) && !s.called {
					t.Errorf("client-sent %s survived a refused request", name)
				}
			}
			if tt.status != http.StatusOK {
				if s.called {
					t.Error("next was called for a refused request")
				}
				checkErrorBody(t, rec, tt.code)
				if tt.status == http.StatusUnauthorized && rec.Header().Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				return
			}

			if !s.called {
				t.Fatal("next was not called")
			}
			caller, err := callerauth.Verify(s.header, []byte(testSecret), time.Now())
			if err != nil {
				t.Fatalf("cell would refuse the request: %v", err)
			}
			if caller.AccountID != tt.want.ID || caller.Plan != tt.want.Plan {
				t.Errorf("cell sees caller %+v, want account %s plan %s", caller, tt.want.ID, tt.want.Plan)
			}
			if len(caller.WebhookSecret) != 64 {
				t.Errorf("cell sees webhook secret %q, want a hex HMAC-SHA256", caller.WebhookSecret)
			}
			if s.account != tt.want.ID || s.plan != tt.want.Plan {
				t.Errorf("vars = %v/%v, want %s/%s", s.account, s.plan, tt.want.ID, tt.want.Plan)
			}
			for name := range s.header {
				switch name {
				case callerauth.HeaderAccount, callerauth.HeaderPlan, callerauth.HeaderWebhook, callerauth.HeaderTimestamp, callerauth.HeaderSignature:
				default:
					if strings.HasPrefix(name, callerauth.Prefix) {
						t.Errorf("client-sent %s reached next", name)
					}
				}
			}
			if got := s.header.Get(HeaderRapidAPIProxySecret); got != "" {
				t.Errorf("proxy secret %q was forwarded to the cell", got)
			}
		})
	}
}

// checkErrorBody asserts the project-wide error shape, exactly.
func checkErrorBody(t *testing.T, rec *httptest.ResponseRecorder, code apierror.Code) {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body map[string]map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q is not the JSON error shape: %v", rec.Body, err)
	}
	e, ok := body["error"]
	if len(body) != 1 || !ok || len(e) != 2 || e["message"] == "" {
		t.Fatalf("body = %s, want {\"error\":{\"code\":...,\"message\":...}}", rec.Body)
	}
	if e["code"] != string(code) {
		t.Errorf("code = %q, want %q", e["code"], code)
	}
}

func TestProvisionErrors(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("tooshort\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "blank")
	if err := os.WriteFile(blank, []byte(" \n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	acc := f.accounts("gw-test")
	tests := []struct {
		name    string
		cfg     map[string]any
		wantErr error
	}{
		{"no accounts", map[string]any{"cell_secret_file": f.secretPath}, ErrConfig},
		{"no gateway id", map[string]any{"accounts": map[string]any{"nodes": []string{f.home.Addr}}, "cell_secret_file": f.secretPath}, ErrConfig},
		{"no cell_secret_file", map[string]any{"accounts": acc}, ErrConfig},
		{"missing secret file", map[string]any{"accounts": acc, "cell_secret_file": filepath.Join(dir, "nope")}, nil},
		{"short secret", map[string]any{"accounts": acc, "cell_secret_file": short}, ErrConfig},
		{"blank secret", map[string]any{"accounts": acc, "cell_secret_file": blank}, ErrConfig},
		{"unknown missing_key", map[string]any{"accounts": acc, "cell_secret_file": f.secretPath, "missing_key": "allow"}, ErrConfig},
		{"a plans file that is not there", map[string]any{"accounts": acc, "cell_secret_file": f.secretPath, "plans_file": filepath.Join(dir, "nope.json")}, nil},
		{"half the cell's TLS", map[string]any{"accounts": map[string]any{"nodes": []string{f.home.Addr}, "gateway": "g", "tls_ca_file": short}, "cell_secret_file": f.secretPath}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tryLoad(t, tt.cfg)
			if err == nil {
				t.Fatal("provisioned without error")
			}
			// LoadModule flattens errors with %v, so match the sentinel's text.
			if tt.wantErr != nil && !strings.Contains(err.Error(), tt.wantErr.Error()) {
				t.Errorf("error = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestPlaceholdersInConfig(t *testing.T) {
	f := newFixture(t)
	t.Setenv("SANDBOXAPI_TEST_PROXY_SECRET", "from-the-env")
	h := f.load(t, map[string]any{"rapidapi_proxy_secret": "{env.SANDBOXAPI_TEST_PROXY_SECRET}"})
	req := httptest.NewRequest(http.MethodGet, "/v1/languages", nil)
	req.Header.Set(HeaderRapidAPIKey, f.proKey)
	req.Header.Set(HeaderRapidAPIProxySecret, "from-the-env")
	if rec, _ := serve(h, req); rec.Code != http.StatusOK {
		t.Errorf("status = %d, want 200: {env.*} placeholder not expanded", rec.Code)
	}
}

// TestReloadSharesAccounts mimics a Caddy config reload: the new instance
// is provisioned while the old one still holds the copy of the accounts,
// then the old one is cleaned up; they share one copy, which closes with
// the last.
func TestReloadSharesAccounts(t *testing.T) {
	f := newFixture(t)
	old, cancelOld := load(t, f.cfg(nil))
	newH, cancelNew := load(t, f.cfg(nil))
	if old.dir != newH.dir {
		t.Fatal("a reload opened a second copy of the accounts")
	}
	cancelOld()
	f.sync(t, newH)
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+f.proKey)
	if rec, _ := serve(newH, req); rec.Code != http.StatusOK {
		t.Fatalf("status = %d after reload", rec.Code)
	}
	d := newH.dir
	cancelNew()
	if err := d.Ready(context.Background()); !errors.Is(err, directory.ErrClosed) {
		t.Errorf("the last Cleanup left the copy open: %v", err)
	}
}

// A gateway whose copy of the accounts has not loaded (the home cell is
// unreachable) answers 503 with Retry-After, not 401 or 500.
func TestAccountsNotLoadedIs503(t *testing.T) {
	f := newFixture(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := ln.Addr().String()
	ln.Close()
	h, _ := load(t, map[string]any{"accounts": map[string]any{"nodes": []string{nowhere}, "gateway": "gw-x", "cell_secret_file": f.secretPath},
		"cell_secret_file": f.secretPath, "ready_timeout": "50ms"})
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set(HeaderAPIKey, f.proKey)
	rec, s := serve(h, req)
	if rec.Code != http.StatusServiceUnavailable || s.called || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("status = %d, Retry-After %q, next called = %v; want 503 with Retry-After", rec.Code, rec.Header().Get("Retry-After"), s.called)
	}
	checkErrorBody(t, rec, apierror.Unavailable)
}

// A suspended account is refused with its reason, on the next request
// after the suspension; resumed, it works again.
func TestSuspendedAccount(t *testing.T) {
	f := newFixture(t)
	h := f.load(t, nil)
	do := func() (*httptest.ResponseRecorder, *seen) {
		req := httptest.NewRequest(http.MethodPost, "/v1/execute", nil)
		req.Header.Set(HeaderAPIKey, f.proKey)
		return serve(h, req)
	}
	ctx := context.Background()
	if _, err := f.dir.Suspend(ctx, f.pro.ID, "unpaid invoice INV-7"); err != nil {
		t.Fatal(err)
	}
	f.sync(t, h)
	rec, s := do()
	if rec.Code != http.StatusForbidden || s.called || !strings.Contains(rec.Body.String(), "unpaid invoice INV-7") {
		t.Fatalf("suspended: %d %s", rec.Code, rec.Body)
	}
	checkErrorBody(t, rec, apierror.AccountSuspended)
	if _, err := f.dir.Resume(ctx, f.pro.ID); err != nil {
		t.Fatal(err)
	}
	f.sync(t, h)
	if rec, _ := do(); rec.Code != http.StatusOK {
		t.Fatalf("resumed: %d %s", rec.Code, rec.Body)
	}
}

// RapidAPI's requests, with its proxy secret: X-RapidAPI-User names the
// account, made on first sight and the same after, and the subscription
// sets each request's plan. Without the secret those headers name nobody.
func TestRapidAPIUsers(t *testing.T) {
	f := newFixture(t)
	const secret = "rapid-proxy-secret"
	withProxy := f.load(t, map[string]any{"rapidapi_proxy_secret": secret})
	noProxy := f.load(t, nil)
	rapid := func(h *Handler, hdr map[string]string) (*httptest.ResponseRecorder, *seen) {
		req := httptest.NewRequest(http.MethodPost, "/v1/execute", nil)
		req.Header.Set(HeaderRapidAPIKey, "a-rapidapi-key-not-ours")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return serve(h, req)
	}
	rec, s := rapid(withProxy, map[string]string{HeaderRapidAPIProxySecret: secret, HeaderRapidAPIUser: "alice", HeaderRapidAPISubscription: "PRO"})
	if rec.Code != http.StatusOK || s.plan != "pro" {
		t.Fatalf("alice on PRO: %d %s, plan %v", rec.Code, rec.Body, s.plan)
	}
	first := s.account
	// The module's own copy has the account it made (a write waits for it).
	if a, err := withProxy.dir.Account(context.Background(), first.(string)); err != nil || a.Channel != accounts.ChannelRapidAPI || a.RapidAPIUser != "alice" {
		t.Fatalf("alice's account: %+v, %v", a, err)
	}
	_, s = rapid(withProxy, map[string]string{HeaderRapidAPIProxySecret: secret, HeaderRapidAPIUser: "alice", HeaderRapidAPISubscription: "mega"})
	if s.account != first || s.plan != "mega" {
		t.Fatalf("alice again on MEGA: account %v (first %v), plan %v", s.account, first, s.plan)
	}
	if _, s = rapid(withProxy, map[string]string{HeaderRapidAPIProxySecret: secret, HeaderRapidAPIUser: "bob"}); s.plan != "basic" || s.account == first {
		t.Fatalf("bob without a subscription: account %v, plan %v", s.account, s.plan)
	}
	for _, c := range []struct {
		name   string
		h      *Handler
		hdr    map[string]string
		status int
		code   apierror.Code
	}{
		{"a wrong secret", withProxy, map[string]string{HeaderRapidAPIProxySecret: secret + "x", HeaderRapidAPIUser: "alice"}, 403, apierror.InvalidProxySecret},
		{"no secret", withProxy, map[string]string{HeaderRapidAPIUser: "alice"}, 403, apierror.InvalidProxySecret},
		{"a subscription no plan has", withProxy, map[string]string{HeaderRapidAPIProxySecret: secret, HeaderRapidAPIUser: "alice", HeaderRapidAPISubscription: "CUSTOM"}, 403, apierror.UnknownPlan},
		// No secret configured: RapidAPI's headers name nobody, and its key is not one of ours.
		{"no secret configured", noProxy, map[string]string{HeaderRapidAPIProxySecret: secret, HeaderRapidAPIUser: "alice"}, 401, apierror.InvalidAPIKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec, s := rapid(c.h, c.hdr)
			if rec.Code != c.status || s.called {
				t.Fatalf("%d %s, next called %v; want %d", rec.Code, rec.Body, s.called, c.status)
			}
			checkErrorBody(t, rec, c.code)
		})
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr bool
	}{
		{
			name: "all options",
			input: `sandboxapi_auth {
				accounts {
					nodes 10.0.0.1:7000 10.0.0.2:7000
					nodes 10.0.0.3:7000
					gateway gw-1
					tls_ca_file /etc/sandboxapi/ca.pem
				}
				cell_secret_file /etc/sandboxapi/cell.secret
				plans_file /etc/sandboxapi/plans.json
				rapidapi_proxy_secret s3cret
			}`,
			want: Handler{Accounts: directory.Files{Nodes: []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}, Gateway: "gw-1", TLSCAFile: "/etc/sandboxapi/ca.pem"},
				CellSecretFile: "/etc/sandboxapi/cell.secret", PlansFile: "/etc/sandboxapi/plans.json", RapidAPIProxySecret: "s3cret"},
		},
		{name: "empty block", input: "sandboxapi_auth {\n}", want: Handler{}},
		{name: "inline argument", input: "sandboxapi_auth /x.db", wantErr: true},
		{name: "option without value", input: "sandboxapi_auth {\n plans_file\n}", wantErr: true},
		{name: "option with two values", input: "sandboxapi_auth {\n plans_file a b\n}", wantErr: true},
		{name: "repeated option", input: "sandboxapi_auth {\n plans_file a\n plans_file b\n}", wantErr: true},
		{name: "unknown accounts option", input: "sandboxapi_auth {\n accounts {\n db x\n }\n}", wantErr: true},
		{name: "accounts nodes without a value", input: "sandboxapi_auth {\n accounts {\n nodes\n }\n}", wantErr: true},
		{name: "unknown option", input: "sandboxapi_auth {\n secret x\n}", wantErr: true},
		{name: "missing key forwarded", input: "sandboxapi_auth {\n missing_key forward\n}", want: Handler{MissingKey: "forward"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Handler
			err := got.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tt.input))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("no error; parsed %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestDirectiveOrder adapts Caddyfiles where sandboxapi_auth is written after
// reverse_proxy and next to handle blocks, and checks it still runs first.
func TestDirectiveOrder(t *testing.T) {
	tests := []struct {
		name  string
		input string
	}{
		{
			name: "flat site",
			input: `:8080 {
				reverse_proxy 127.0.0.1:9000
				sandboxapi_auth {
					plans_file /a.json
				}
			}`,
		},
		{
			name: "with handle blocks",
			input: `:8080 {
				handle {
					reverse_proxy 127.0.0.1:9000
				}
				sandboxapi_auth /v1/* {
					plans_file /a.json
				}
			}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(tt.input), nil)
			if err != nil {
				t.Fatal(err)
			}
			s := string(out)
			a, p := strings.Index(s, `"handler":"sandboxapi_auth"`), strings.Index(s, `"handler":"reverse_proxy"`)
			if a < 0 || p < 0 {
				t.Fatalf("handlers missing from %s", s)
			}
			if a > p {
				t.Errorf("sandboxapi_auth comes after reverse_proxy: %s", s)
			}
			if !strings.Contains(s, `"plans_file":"/a.json"`) {
				t.Errorf("option lost: %s", s)
			}
		})
	}
}

// TestMissingKeyForward: with missing_key forward, a request that carries
// no key goes on, without its body, signed as a request with no caller, so
// that the cell says whether its path exists (404, 405) or needs a key
// (401). A key that is wrong is still refused here.
func TestMissingKeyForward(t *testing.T) {
	f := newFixture(t)
	h := f.load(t, map[string]any{"missing_key": "forward"})
	tests := []struct {
		name    string
		headers map[string]string
		forward bool // as a request without a caller
		status  int  // when refused
	}{
		{name: "no key", forward: true},
		{name: "basic credentials that do not decode are no key", headers: map[string]string{"Authorization": "Basic !!!"}, forward: true},
		{name: "forged internal headers", headers: map[string]string{"X-Sandboxapi-Internal-Account": f.pro.ID, "X-Sandboxapi-Internal-Signature": "forged"}, forward: true},
		{name: "unknown key", headers: map[string]string{"X-API-Key": "sk_nope"}, status: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodPost, "/v1/execute", strings.NewReader(`{"language":"bash"}`))
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			var body []byte
			var length int64
			var anonymous any
			vars := map[string]any{}
			req = req.WithContext(context.WithValue(req.Context(), caddyhttp.VarsCtxKey, vars))
			var header http.Header
			rec := httptest.NewRecorder()
			err := h.ServeHTTP(rec, req, caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
				header, length = r.Header.Clone(), r.ContentLength
				body, _ = io.ReadAll(r.Body)
				anonymous = caddyhttp.GetVar(r.Context(), VarAnonymous)
				w.WriteHeader(http.StatusTeapot)
				return nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.forward {
				if header != nil || rec.Code != tt.status {
					t.Fatalf("status %d, forwarded %v; want %d here", rec.Code, header != nil, tt.status)
				}
				return
			}
			if header == nil {
				t.Fatalf("not forwarded: status %d, body %s", rec.Code, rec.Body)
			}
			caller, err := callerauth.Verify(header, []byte(testSecret), time.Now())
			if err != nil || caller != (callerauth.Caller{}) {
				t.Errorf("cell sees %+v, %v; want a signed request with no caller", caller, err)
			}
			if anonymous != true || caddyhttp.GetVar(req.Context(), VarAccountID) != nil {
				t.Errorf("vars: anonymous %v, account %v", anonymous, caddyhttp.GetVar(req.Context(), VarAccountID))
			}
			if length != 0 || len(body) != 0 || header.Get("Content-Length") != "" {
				t.Errorf("body forwarded: Content-Length %d, %q", length, body)
			}
		})
	}
}

// basic is HTTP Basic credentials, as a client encodes "user:password".
func basic(userPassword string) string {
	return base64.StdEncoding.EncodeToString([]byte(userPassword))
}
