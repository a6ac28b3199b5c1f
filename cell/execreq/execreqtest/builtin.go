package execreqtest

import (
	"context"
	"regexp"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// BuiltinCatalog is every language this build runs, with its real ids,
// aliases, source file names and compile commands but stand-in
// toolchains, so that a test of a rule that depends on the language (a
// file that collides with its source file) covers all of them whatever
// the host has installed.
func BuiltinCatalog(t testing.TB) *langs.Catalog {
	t.Helper()
	var all []*langs.Language
	for _, l := range langs.BuiltinIn(t.TempDir()) {
		var wasm *langs.Wasm
		if l.Wasm != nil {
			// Offered whatever the host has installed, as the
			// stand-in toolchains are.
			w := *l.Wasm
			w.Needs = nil
			wasm = &w
		}
		all = append(all, &langs.Language{
			ID: l.ID, Name: l.Name, Aliases: l.Aliases, SourceFile: l.SourceFile,
			Compile: l.Compile, CompileArgs: l.CompileArgs, Artifact: l.Artifact, Run: l.Run, Wasm: wasm,
			Binary: "/bin/true", VersionArgv: []string{"/bin/true"}, VersionRE: regexp.MustCompile(`(.*)`),
		})
	}
	return langs.Detect(context.Background(), all)
}
