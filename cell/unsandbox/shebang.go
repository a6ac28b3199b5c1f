package unsandbox

import (
	"bytes"
	"path"
	"regexp"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

// interpreters maps the program a shebang line names (its base name,
// version suffix removed) to a language id of the catalog.
var interpreters = map[string]string{
	"python":        "python3",
	"pypy":          "python3",
	"node":          "javascript",
	"nodejs":        "javascript",
	"bash":          "bash",
	"sh":            "bash",
	"ruby":          "ruby",
	"php":           "php",
	"ts-node":       "typescript",
	"tsx":           "typescript",
	"java":          "java",
	"rust-script":   "rust",
	"dotnet-script": "csharp",
	"gorun":         "go",
}

// dialectNames are the unsandbox dialect's names for catalog ids that
// differ from them.
var dialectNames = map[string]string{
	"python3": "python",
}

// DialectName is the unsandbox dialect's name for a catalog language id.
func DialectName(id string) string {
	if n, ok := dialectNames[id]; ok {
		return n
	}
	return id
}

// versionSuffix is what follows an interpreter's name in python3.12,
// node22 or ruby3.3.
var versionSuffix = regexp.MustCompile(`[0-9][0-9.]*$`)

// DetectLanguage finds the language of code from its shebang line:
// "#!/usr/bin/env python3", "#!/bin/bash", "#!/usr/bin/env -S node
// --flag", "#!/usr/bin/ruby3.3".
func DetectLanguage(code []byte, cat *langs.Catalog) (*langs.Language, error) {
	code = bytes.TrimPrefix(code, []byte("\xef\xbb\xbf")) // a BOM some editors write
	if !bytes.HasPrefix(code, []byte("#!")) {
		return nil, apierror.New(apierror.LanguageNotDetected, "the code has no shebang line; start it with one such as #!/usr/bin/env python3, or use POST /execute with a language")
	}
	line, _, _ := bytes.Cut(code[2:], []byte("\n"))
	words := strings.Fields(string(line))
	if len(words) > 0 && path.Base(words[0]) == "env" {
		// env's own options (-S, -i, -u NAME) and VAR=value assignments
		// come before the program.
		words = words[1:]
		for len(words) > 0 && (strings.HasPrefix(words[0], "-") || strings.Contains(words[0], "=")) {
			if words[0] == "-u" && len(words) > 1 {
				words = words[1:]
			}
			words = words[1:]
		}
	}
	if len(words) == 0 {
		return nil, apierror.New(apierror.LanguageNotDetected, "the shebang line names no interpreter")
	}
	prog := path.Base(words[0])
	id, ok := interpreters[prog]
	if !ok {
		id, ok = interpreters[versionSuffix.ReplaceAllString(prog, "")]
	}
	if !ok {
		return nil, apierror.New(apierror.LanguageNotDetected, "the shebang names %q, which is not a supported interpreter", prog)
	}
	lang, ok := cat.Lookup(id)
	if !ok {
		return nil, apierror.New(apierror.UnsupportedLanguage, "the shebang names %s (%s), which this node does not offer", prog, id)
	}
	return lang, nil
}
