package mcp

import (
	"encoding/json"
	"fmt"
	"strings"
)

// renderer turns a REST answer into a tool result: its structured content
// (an object, as MCP requires) and a text a model reads easily.
type renderer func(body []byte) (json.RawMessage, string)

// execution is what the text of an execution's result shows.
type execution struct {
	ID              string  `json:"id"`
	Token           string  `json:"token"`
	Status          string  `json:"status"`
	Language        string  `json:"language"`
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	CompileOutput   *string `json:"compile_output"`
	ExitCode        int     `json:"exit_code"`
	ExitSignal      int     `json:"exit_signal"`
	ExecutionTimeMs int64   `json:"execution_time_ms"`
	WallTimeMs      int64   `json:"wall_time_ms"`
	MemoryUsedKB    int64   `json:"memory_used_kb"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
	Message         string  `json:"message"`
	SessionID       string  `json:"session_id"`
	StateLost       bool    `json:"state_lost"`
	Error           *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (e execution) text() string {
	var b strings.Builder
	if e.Error != nil {
		return fmt.Sprintf("error: %s: %s", e.Error.Code, e.Error.Message)
	}
	fmt.Fprintf(&b, "status: %s · exit code %d", e.Status, e.ExitCode)
	if e.ExitSignal != 0 {
		fmt.Fprintf(&b, " (signal %d)", e.ExitSignal)
	}
	fmt.Fprintf(&b, " · CPU %d ms · wall %d ms · memory %.1f MB\n", e.ExecutionTimeMs, e.WallTimeMs, float64(e.MemoryUsedKB)/1024)
	if e.Message != "" {
		fmt.Fprintf(&b, "message: %s\n", e.Message)
	}
	if e.StateLost {
		b.WriteString("the session's state was lost: its interpreter restarted\n")
	}
	if e.CompileOutput != nil && *e.CompileOutput != "" {
		section(&b, "compile output", *e.CompileOutput, false)
	}
	section(&b, "stdout", e.Stdout, e.StdoutTruncated)
	section(&b, "stderr", e.Stderr, e.StderrTruncated)
	return strings.TrimRight(b.String(), "\n")
}

// section writes a stream under its name, or says it is empty.
func section(b *strings.Builder, name, s string, truncated bool) {
	if s == "" {
		fmt.Fprintf(b, "%s: (empty)\n", name)
		return
	}
	fmt.Fprintf(b, "%s:\n%s", name, s)
	if !strings.HasSuffix(s, "\n") {
		b.WriteByte('\n')
	}
	if truncated {
		fmt.Fprintf(b, "(%s truncated)\n", name)
	}
}

func renderExecution(body []byte) (json.RawMessage, string) {
	var e execution
	_ = json.Unmarshal(body, &e)
	return body, e.text()
}

func renderBatch(body []byte) (json.RawMessage, string) {
	var r struct {
		Results []execution `json:"results"`
	}
	_ = json.Unmarshal(body, &r)
	var b strings.Builder
	for i, e := range r.Results {
		if i > 0 {
			b.WriteString("\n\n")
		}
		fmt.Fprintf(&b, "[%d] %s", i, e.text())
	}
	return body, b.String()
}

func renderLanguages(body []byte) (json.RawMessage, string) {
	var list []struct {
		ID, Name, Version string
	}
	_ = json.Unmarshal(body, &list)
	lines := make([]string, 0, len(list))
	for _, l := range list {
		lines = append(lines, fmt.Sprintf("%s: %s %s", l.ID, l.Name, l.Version))
	}
	out, _ := json.Marshal(map[string]json.RawMessage{"languages": body})
	return out, strings.Join(lines, "\n")
}

func renderSession(body []byte) (json.RawMessage, string) {
	var s struct {
		ID        string `json:"id"`
		Language  string `json:"language"`
		ExpiresAt string `json:"expires_at"`
		IdleTTL   int    `json:"idle_ttl"`
	}
	_ = json.Unmarshal(body, &s)
	return body, fmt.Sprintf("session %s (%s) is open; it closes after %d s without an execution (now at %s). Pass session_id %q to session_execute.",
		s.ID, s.Language, s.IdleTTL, s.ExpiresAt, s.ID)
}

func renderClosed(body []byte) (json.RawMessage, string) {
	var s struct {
		ID         string `json:"id"`
		Executions int    `json:"executions"`
	}
	_ = json.Unmarshal(body, &s)
	return body, fmt.Sprintf("session %s is closed after %d executions", s.ID, s.Executions)
}

func renderInstall(body []byte) (json.RawMessage, string) {
	var s struct {
		Manager   string `json:"manager"`
		Installed []struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"installed"`
		DurationMs int64 `json:"duration_ms"`
	}
	_ = json.Unmarshal(body, &s)
	names := make([]string, 0, len(s.Installed))
	for _, p := range s.Installed {
		names = append(names, p.Name+" "+p.Version)
	}
	return body, fmt.Sprintf("installed with %s in %d ms: %s", s.Manager, s.DurationMs, strings.Join(names, ", "))
}

func renderAccepted(body []byte) (json.RawMessage, string) {
	var a struct {
		Token  string `json:"token"`
		Status string `json:"status"`
	}
	_ = json.Unmarshal(body, &a)
	return body, fmt.Sprintf("execution %s is %s; call get_execution with token %q for its result", a.Token, a.Status, a.Token)
}

func renderJob(body []byte) (json.RawMessage, string) {
	var e execution
	_ = json.Unmarshal(body, &e)
	switch e.Status {
	case "queued", "running":
		id := e.Token
		if id == "" {
			id = e.ID
		}
		return body, fmt.Sprintf("execution %s is %s; ask again shortly", id, e.Status)
	}
	return body, e.text()
}
