package sessions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/execreq"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// maxInstallOutput is how much of an installer's output a response
// carries: its tail, where the errors are.
const maxInstallOutput = 8 << 10

// managerFor is the package manager of a session language, "" for none.
func managerFor(language string) pkgcache.Manager {
	switch language {
	case "python3":
		return pkgcache.Pip
	case "javascript", "typescript":
		return pkgcache.NPM
	case "ruby":
		return pkgcache.Gem
	case "rust":
		return pkgcache.Cargo
	}
	return ""
}

// installBody is POST /v1/sessions/{id}/install.
type installBody struct {
	Manager  string   `json:"manager"`
	Packages []string `json:"packages"`
}

// installedPackage is one package an install put into the session.
type installedPackage struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// InstallResponse is a session install's result.
type InstallResponse struct {
	SessionID  string             `json:"session_id"`
	Manager    string             `json:"manager"`
	Installed  []installedPackage `json:"installed"`
	DurationMs int64              `json:"duration_ms"`
	Output     string             `json:"output"`
	ExpiresAt  string             `json:"expires_at"`
}

// install serves POST /v1/sessions/{id}/install: every package is checked
// against the cache and the plan before the installer runs, and the
// installer reads the cache only (the sandbox has no network).
func (m *Manager) install(w http.ResponseWriter, r *http.Request, c callerauth.Caller, s *session) {
	plan, ok := m.installPlan(w, c)
	if !ok {
		return
	}
	body, err := execreq.ReadBody(w, r, maxCreateBodyBytes)
	if err != nil {
		m.writeError(w, err)
		return
	}
	var b installBody
	if err := decodeObject(body, &b); err != nil {
		m.writeError(w, err)
		return
	}
	want := managerFor(s.rec.Language)
	switch {
	case b.Manager == "":
		apierror.New(apierror.MissingField, "manager is required: pip, npm, gem or cargo").Write(w)
		return
	case b.Packages == nil:
		apierror.New(apierror.MissingField, "packages is required: a list of package names").Write(w)
		return
	case want == "":
		apierror.New(apierror.ManagerMismatch, "%s sessions have no package manager; pip is for python3, npm for javascript and typescript, gem for ruby, cargo for rust", s.rec.Language).Write(w)
		return
	case pkgcache.Manager(b.Manager) != want:
		apierror.New(apierror.ManagerMismatch, "a %s session installs with %s, not %q", s.rec.Language, want, b.Manager).Write(w)
		return
	}
	if m.cfg.Packages == nil {
		apierror.New(apierror.Unavailable, "this node has no package cache").Write(w)
		return
	}
	in, err := m.cfg.Packages.Resolve(pkgcache.Request{Manager: want, Packages: b.Packages, Policy: plan.Packages, Account: c.AccountID})
	if err != nil {
		m.refuseInstall(w, err)
		return
	}

	release, err := m.acquire(r.Context(), s)
	if err != nil {
		m.turnError(w, s, err)
		return
	}
	defer release()
	// Like an execution, an install finishes even if the client leaves.
	ctx, cancel := m.runContext(s, context.WithoutCancel(r.Context()))
	defer cancel()
	if err := m.ensureSandbox(s); err != nil {
		m.runError(w, s, errSandboxDown)
		return
	}
	cmd := in.Command(m.sandboxPaths())
	start := time.Now()
	res, err := s.sb.Command(ctx, cmd.Argv, cmd.Env, m.cfg.InstallLimits, nil)
	took := time.Since(start)
	switch {
	case ctx.Err() != nil && m.isEnded(s):
		m.notFound(w, s.rec.ID)
		return
	case err != nil:
		m.writeError(w, fmt.Errorf("sessions: install: %w", err))
		return
	}
	output := tail(string(res.Stdout)+string(res.Stderr), maxInstallOutput)
	names := make([]string, len(in.Packages))
	for i, p := range in.Packages {
		names[i] = p.Name + " " + p.Version
	}
	if status := execreq.StatusOf(res); status != execreq.StatusCompleted {
		m.logger.Warn("install failed", "session", s.rec.ID, "manager", want, "packages", strings.Join(names, ", "), "status", status, "exit", res.ExitCode)
		msg := fmt.Sprintf("%s could not install %s", want, strings.Join(names, ", "))
		switch {
		case status == execreq.StatusTimeout:
			msg += fmt.Sprintf(": it took longer than %s", m.cfg.InstallLimits.Wall)
		case strings.TrimSpace(output) != "":
			msg += ":\n" + output
		case res.Message != "":
			msg += ": " + res.Message
		}
		apierror.New(apierror.InstallFailed, msg).Write(w)
		return
	}
	if want == pkgcache.Cargo {
		s.crates = true
	}
	m.logger.Info("packages installed", "session", s.rec.ID, "manager", want, "packages", strings.Join(names, ", "), "took", took)
	out := InstallResponse{SessionID: s.rec.ID, Manager: string(want), DurationMs: took.Milliseconds(), Output: output,
		ExpiresAt: rfc3339(m.now().Add(s.ttl))}
	for _, p := range in.Packages {
		out.Installed = append(out.Installed, installedPackage{Name: p.Name, Version: p.Version})
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// installPlan is the caller's plan when it includes package installs;
// otherwise it answers the refusal (403 packages_not_in_plan for a plan
// without installs) and reports false. Installs and GET /v1/packages
// refuse alike.
func (m *Manager) installPlan(w http.ResponseWriter, c callerauth.Caller) (plans.Plan, bool) {
	plan, err := execreq.PlanFor(m.cfg.Plans, c.Plan)
	if err != nil {
		m.writeError(w, err)
		return plans.Plan{}, false
	}
	if plan.Packages == plans.PackagesNone {
		apierror.New(apierror.PackagesNotInPlan, "package installs are not included in the %s plan", plan.Name).Write(w)
		return plans.Plan{}, false
	}
	return plan, true
}

// refuseInstall answers an install the cache or the plan refused.
func (m *Manager) refuseInstall(w http.ResponseWriter, err error) {
	var ref *pkgcache.Refusal
	if !errors.As(err, &ref) {
		m.logger.Error("package cache unreadable", "err", err)
		apierror.New(apierror.Unavailable, "the package cache cannot be read right now; retry shortly").Write(w)
		return
	}
	switch ref.Reason {
	case pkgcache.ReasonNoInstalls:
		apierror.New(apierror.PackagesNotInPlan, ref.Message).Write(w)
	case pkgcache.ReasonNotAllowed:
		apierror.New(apierror.PackageNotInPlan, ref.Message).Write(w)
	case pkgcache.ReasonNotCached:
		apierror.New(apierror.PackageNotCached, ref.Message).Write(w)
	default:
		apierror.New(apierror.InvalidPackage, ref.Message).Write(w)
	}
}

// tail is the last n bytes of s, cut at a line start when one is near.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < 200 {
		s = s[i+1:]
	}
	return "…\n" + s
}
