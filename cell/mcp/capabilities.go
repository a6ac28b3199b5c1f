package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	mcpsdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// capabilities is what get_capabilities answers: what this caller may do.
type capabilities struct {
	Plan      plans.Plan   `json:"plan"`
	Languages []langs.Info `json:"languages"`
	Features  features     `json:"features"`
	// Tools are the tools the plan lets this caller use.
	Tools []string `json:"tools"`
}

type features struct {
	Sessions  bool `json:"sessions"`
	Packages  bool `json:"packages"`
	Async     bool `json:"async"`
	Batch     bool `json:"batch"`
	Streaming bool `json:"streaming"`
}

// capabilities serves get_capabilities from the caller's plan, which the
// gateway named in the signed headers of the request that carried the
// call (the node checked them before the SDK saw it).
func (d *Door) capabilities(_ context.Context, req *mcpsdk.CallToolRequest, _ noArgs) (*mcpsdk.CallToolResult, any, error) {
	name := header(req).Get(callerauth.HeaderPlan)
	plan, ok := d.Plans.Get(name)
	if !ok {
		var e apiError
		e.Error.Code, e.Error.Message = string(apierror.UnknownPlan), fmt.Sprintf("plan %q is not known to this node", name)
		return toolError(e), nil, nil
	}
	c := capabilities{
		Plan:      plan,
		Languages: d.Catalog.List(),
		Features: features{
			Sessions:  plan.ConcurrentSessions > 0,
			Packages:  plan.ConcurrentSessions > 0 && plan.Packages != plans.PackagesNone,
			Async:     plan.Async,
			Batch:     plan.BatchSize > 0,
			Streaming: plan.Streaming,
		},
	}
	for _, t := range d.tools() {
		if usable(t.def.Name, c.Features) {
			c.Tools = append(c.Tools, t.def.Name)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, nil, fmt.Errorf("mcp: %w", err)
	}
	return &mcpsdk.CallToolResult{
		StructuredContent: json.RawMessage(b),
		Content:           []mcpsdk.Content{&mcpsdk.TextContent{Text: c.text()}},
	}, nil, nil
}

// usable says whether a plan with f lets a caller use tool.
func usable(tool string, f features) bool {
	switch tool {
	case "create_session", "session_execute", "session_close":
		return f.Sessions
	case "session_install_packages":
		return f.Packages
	case "execute_async", "get_execution":
		return f.Async
	case "execute_batch":
		return f.Batch
	}
	return true
}

func (c capabilities) text() string {
	var b strings.Builder
	p := c.Plan
	fmt.Fprintf(&b, "plan %s: %d executions a month, %d requests a minute, timeouts up to %d s, %d running at once",
		p.Name, p.ExecutionsPerMonth, p.RequestsPerMinute, p.MaxTimeoutSeconds, p.ConcurrentExecutions)
	if c.Features.Batch {
		fmt.Fprintf(&b, ", batches of up to %d", p.BatchSize)
	}
	if c.Features.Sessions {
		fmt.Fprintf(&b, ", %d sessions at once (packages: %s)", p.ConcurrentSessions, p.Packages)
	} else {
		b.WriteString(", no sessions")
	}
	if !c.Features.Async {
		b.WriteString(", no async executions")
	}
	b.WriteString("\ntools: " + strings.Join(c.Tools, ", ") + "\nlanguages:")
	for _, l := range c.Languages {
		fmt.Fprintf(&b, " %s (%s)", l.ID, l.Version)
	}
	return b.String()
}
