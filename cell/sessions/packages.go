package sessions

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/pkgcache"
)

// PackagesResponse is GET /v1/packages: one page of what the caller's plan
// may install with one manager.
type PackagesResponse struct {
	Manager string `json:"manager"`
	Plan    string `json:"plan"`
	// Policy is the plan's package set (plans.Packages*).
	Policy   string            `json:"policy"`
	Packages []pkgcache.Listed `json:"packages"`
	// Count is the packages on this page, Total those matching on every
	// page.
	Count int `json:"count"`
	Total int `json:"total"`
	// Next, when set, is the cursor of the next page.
	Next string `json:"next,omitempty"`
}

// listPackages serves GET /v1/packages?manager=pip[&q=][&limit=][&cursor=]:
// the cached packages the caller's plan lets an install name, each with
// its versions. It reads the index only: nothing runs, nothing is counted.
// A plan without installs is refused as an install is (403
// packages_not_in_plan), before the query is looked at.
func (m *Manager) listPackages(w http.ResponseWriter, r *http.Request, c callerauth.Caller) {
	plan, ok := m.installPlan(w, c)
	if !ok {
		return
	}
	q := r.URL.Query()
	manager := pkgcache.Manager(q.Get("manager"))
	limit := pkgcache.DefaultListLimit
	switch {
	case manager == "":
		apierror.New(apierror.MissingField, "manager is required: pip, npm, gem or cargo").Write(w)
		return
	case !slices.Contains(pkgcache.Managers, manager):
		apierror.New(apierror.InvalidField, "manager must be pip, npm, gem or cargo, not %q", manager).Write(w)
		return
	case len(q.Get("q")) > pkgcache.MaxNameBytes:
		apierror.New(apierror.InvalidField, "q may be at most %d bytes", pkgcache.MaxNameBytes).Write(w)
		return
	case len(q.Get("cursor")) > pkgcache.MaxNameBytes:
		apierror.New(apierror.InvalidField, "cursor is not one this endpoint gave: pass a response's next as it is").Write(w)
		return
	case q.Has("limit"):
		n, err := strconv.Atoi(q.Get("limit"))
		if err != nil || n < 1 || n > pkgcache.MaxListLimit {
			apierror.New(apierror.InvalidField, "limit must be a whole number from 1 to %d", pkgcache.MaxListLimit).Write(w)
			return
		}
		limit = n
	}
	if m.cfg.Packages == nil {
		apierror.New(apierror.Unavailable, "this node has no package cache").Write(w)
		return
	}
	l, err := m.cfg.Packages.List(pkgcache.ListQuery{Manager: manager, Policy: plan.Packages, Account: c.AccountID,
		Match: q.Get("q"), After: q.Get("cursor"), Limit: limit})
	if err != nil {
		m.refuseInstall(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, PackagesResponse{Manager: string(manager), Plan: plan.Name, Policy: plan.Packages,
		Packages: l.Packages, Count: len(l.Packages), Total: l.Total, Next: l.Next})
}
