package selfserve

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// maxSessionID bounds the session_id of the success page; Stripe's are
// about 66 characters.
const maxSessionID = 255

// signupResponse is a free account just made, the one time its key is
// shown; the shape of `sandboxapi admin accounts create`.
type signupResponse struct {
	AccountID string `json:"account_id"`
	APIKey    string `json:"api_key"`
	KeyID     string `json:"key_id"`
	Plan      string `json:"plan"`
}

// Signup serves POST /v1/signup {"email"}: a free (basic) account and its
// API key, 201, shown this once. Rate-limited per client address.
func (s *Service) Signup(w http.ResponseWriter, r *http.Request) {
	req, err := readSignup(w, r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if p := strings.ToLower(strings.TrimSpace(req.Plan)); p != "" && p != plans.Free {
		s.fail(w, apierror.New(apierror.InvalidField,
			"POST %s makes %s accounts only; buy plan %q with POST %s", PathSignup, plans.Free, p, PathCheckout))
		return
	}
	email, err := parseEmail(req.Email)
	if err != nil {
		s.fail(w, err)
		return
	}
	if err := s.allow(w, r, s.signup, "signup"); err != nil {
		s.fail(w, err)
		return
	}
	a, k, err := s.freeAccount(r.Context(), email)
	if err != nil {
		s.fail(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, signupResponse{AccountID: a.ID, APIKey: k.APIKey, KeyID: k.ID, Plan: a.Plan})
}

// freeAccount makes a basic account of the direct channel and its key.
func (s *Service) freeAccount(ctx context.Context, email string) (accounts.Account, accounts.IssuedKey, error) {
	a, err := s.accounts.CreateAccount(ctx, accounts.NewAccount{Plan: plans.Free, Email: email, Channel: accounts.ChannelDirect})
	if err != nil {
		return a, accounts.IssuedKey{}, s.storeFailure("creating a free account", err)
	}
	k, err := s.accounts.IssueKey(ctx, a.ID)
	if err != nil {
		// The account stays, keyless: an operator can give it a key
		// (sandboxapi admin keys create); a retry makes another.
		return a, k, s.storeFailure("issuing the key of free account "+a.ID, err)
	}
	return a, k, nil
}

// SignupPage serves GET /signup: the plans and an email field.
func (s *Service) SignupPage(w http.ResponseWriter, r *http.Request) {
	s.renderSignup(w, http.StatusOK, signupForm{Plan: r.URL.Query().Get("plan")})
}

// SignupForm serves the signup page's POST /signup: the free plan makes
// its account and shows the key; a paid plan goes on to Stripe Checkout
// (303 to the session's URL).
func (s *Service) SignupForm(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		s.renderSignup(w, http.StatusBadRequest, signupForm{Error: "The form could not be read; send it again."})
		return
	}
	form := signupForm{Plan: r.PostForm.Get("plan"), Email: r.PostForm.Get("email")}
	name := strings.ToLower(strings.TrimSpace(form.Plan))
	email, err := parseEmail(form.Email)
	if err != nil {
		s.formError(w, form, err)
		return
	}
	if name == plans.Free && !s.cfg.NoFreeSignup {
		if err := s.allow(w, r, s.signup, "signup"); err != nil {
			s.formError(w, form, err)
			return
		}
		a, k, err := s.freeAccount(r.Context(), email)
		if err != nil {
			s.formError(w, form, err)
			return
		}
		s.renderKey(w, r, http.StatusCreated, a, k)
		return
	}
	plan, err := s.paidPlan(name)
	if err != nil {
		s.formError(w, form, err)
		return
	}
	if err := s.allow(w, r, s.checkout, "checkout"); err != nil {
		s.formError(w, form, err)
		return
	}
	sess, err := s.newCheckout(r.Context(), plan, email)
	if err != nil {
		s.formError(w, form, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, sess.URL, http.StatusSeeOther)
}

// formError shows the signup page again with what went wrong.
func (s *Service) formError(w http.ResponseWriter, form signupForm, err error) {
	e := apierror.Public(err, s.logger)
	if e.Status() == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	form.Error = e.Message
	s.renderSignup(w, e.Status(), form)
}

// SignupSuccess serves GET /signup/success?session_id=cs_...: where
// Checkout sends the buyer back. It shows the new account's first key
// once; while Stripe's webhook has not arrived, a page that reloads
// itself; after the first showing, only that it was shown.
func (s *Service) SignupSuccess(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("session_id")
	if !validSessionID(id) {
		s.renderMessage(w, http.StatusBadRequest, messagePage{
			Title: "No checkout to show",
			Text:  "This page needs the session_id Stripe Checkout adds to it. Start at the signup page.",
		})
		return
	}
	a, k, err := s.accounts.RevealCheckoutKey(r.Context(), id)
	switch {
	case err == nil:
		s.renderKey(w, r, http.StatusOK, a, k)
	case errors.Is(err, accounts.ErrCheckoutPending):
		s.renderMessage(w, http.StatusAccepted, messagePage{
			Title:   "Setting up your account",
			Text:    "Stripe has not confirmed the payment to us yet; this usually takes a few seconds. This page reloads itself.",
			Refresh: 2,
		})
	case errors.Is(err, accounts.ErrAlreadyRevealed):
		s.renderMessage(w, http.StatusGone, messagePage{
			Title: "Your API key was already shown",
			Text: "The key of this checkout was shown once and is never shown again: SandboxAPI keeps only its hash. " +
				"If you lost it, ask the operator for a new key (sandboxapi admin keys create).",
		})
	case errors.Is(err, accounts.ErrNotFound):
		s.renderMessage(w, http.StatusNotFound, messagePage{
			Title: "Unknown checkout",
			Text:  "No checkout of this service has that session_id.",
		})
	default:
		e := s.storeFailure("revealing the key of checkout "+id, err)
		if ae, ok := apierror.As(e); ok && ae.Status() != http.StatusServiceUnavailable {
			s.renderMessage(w, ae.Status(), messagePage{Title: "Something went wrong", Text: ae.Message})
			return
		}
		w.Header().Set("Retry-After", retryAfter)
		s.renderMessage(w, http.StatusServiceUnavailable, messagePage{
			Title:   "Try again in a moment",
			Text:    "The account store is unavailable. Your payment is safe and your key has not been shown; this page reloads itself.",
			Refresh: 5,
		})
	}
}

// validSessionID is the shape of a Checkout Session id (cs_test_a1B2...),
// checked before it reaches the store or a log line.
func validSessionID(id string) bool {
	if !strings.HasPrefix(id, "cs_") || len(id) > maxSessionID {
		return false
	}
	for _, c := range id[3:] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return len(id) > 3
}
