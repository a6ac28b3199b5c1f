// Package langs is the language catalog: how each language's source is named,
// compiled and run inside a sandbox, and which toolchain version the host
// really has. Versions are detected by running the toolchain, never written
// down, so /v1/languages cannot drift from what executes.
package langs

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Language is one entry of the catalog.
type Language struct {
	ID   string // the API's language id, e.g. "python3"
	Name string // human name, e.g. "Python"
	// Aliases are other ids accepted for it (the unsandbox dialect's names).
	Aliases []string
	// SourceFile is the name the code is written to in the work dir.
	SourceFile string
	// Compile, when set, runs before Run; a failure is a compilation_error.
	Compile []string
	Run     []string
	// Env is added to the sandbox's base environment for this language.
	Env []string
	// Binary must exist on the host for the language to be offered.
	Binary string
	// VersionArgv prints the version; VersionRE's first group extracts it.
	VersionArgv []string
	VersionRE   *regexp.Regexp
}

// Info is what /v1/languages reports.
type Info struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Builtin is the catalog of languages this build knows how to run.
func Builtin() []*Language {
	return []*Language{
		{
			ID: "python3", Name: "Python", Aliases: []string{"python", "py"},
			SourceFile:  "main.py",
			Run:         []string{"/usr/bin/python3", "main.py"},
			Env:         []string{"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "PYTHONIOENCODING=utf-8"},
			Binary:      "/usr/bin/python3",
			VersionArgv: []string{"/usr/bin/python3", "--version"},
			VersionRE:   regexp.MustCompile(`Python (\S+)`),
		},
		{
			ID: "javascript", Name: "JavaScript (Node.js)", Aliases: []string{"node", "js", "nodejs"},
			SourceFile:  "main.js",
			Run:         []string{"/usr/bin/node", "main.js"},
			Binary:      "/usr/bin/node",
			VersionArgv: []string{"/usr/bin/node", "--version"},
			VersionRE:   regexp.MustCompile(`v(\S+)`),
		},
		{
			ID: "bash", Name: "Bash", Aliases: []string{"sh", "shell"},
			SourceFile:  "main.sh",
			Run:         []string{"/bin/bash", "main.sh"},
			Binary:      "/bin/bash",
			VersionArgv: []string{"/bin/bash", "--version"},
			VersionRE:   regexp.MustCompile(`version (\d+\.\d+\.\d+)`),
		},
	}
}

// Catalog is the set of languages available on this node, with versions.
type Catalog struct {
	mu       sync.RWMutex
	byID     map[string]*Language
	versions map[string]string
}

// Detect builds a catalog of the languages whose toolchain is installed,
// with the versions the toolchains report.
func Detect(ctx context.Context, all []*Language) *Catalog {
	c := &Catalog{byID: map[string]*Language{}, versions: map[string]string{}}
	var wg sync.WaitGroup
	for _, l := range all {
		if _, err := os.Stat(l.Binary); err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := detectVersion(ctx, l)
			c.mu.Lock()
			defer c.mu.Unlock()
			c.versions[l.ID] = v
			c.byID[l.ID] = l
			for _, a := range l.Aliases {
				c.byID[a] = l
			}
		}()
	}
	wg.Wait()
	return c
}

func detectVersion(ctx context.Context, l *Language) string {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, l.VersionArgv[0], l.VersionArgv[1:]...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	if m := l.VersionRE.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// Lookup finds a language by id or alias.
func (c *Catalog) Lookup(id string) (*Language, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	l, ok := c.byID[id]
	return l, ok
}

// Version is the detected version of the language with this id.
func (c *Catalog) Version(id string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.versions[id]
}

// List reports every available language, sorted by id.
func (c *Catalog) List() []Info {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []Info
	for id, l := range c.byID {
		if id != l.ID {
			continue
		}
		out = append(out, Info{ID: l.ID, Name: l.Name, Version: c.versions[l.ID]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
