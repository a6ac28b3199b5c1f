package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
)

// usageError is a mistake on the command line: the command exits 2, as
// flag's own errors do, and runs nothing.
type usageError struct {
	err     error
	printed bool // the flag package already said what is wrong
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// usagef is a usageError for the command name, pointing at its help.
func usagef(name, format string, args ...any) error {
	return usageError{err: fmt.Errorf("%s: %s (see `sandboxapi %s --help`)", name, fmt.Sprintf(format, args...), name)}
}

// parseFlags parses args into fs, a command that takes no positional
// arguments: a stray word is a mistake, not something to ignore (issue
// #13: `dev extra-arg --listen ...` started on the defaults). usage is the
// line after "usage: sandboxapi ", then more text before the flags. Help
// that was asked for goes to stdout and ends in flag.ErrHelp (exit 0);
// help after a mistake goes to stderr.
func parseFlags(fs *flag.FlagSet, args []string, usage string) error {
	pos, err := parseArgs(fs, args, usage)
	if err == nil && len(pos) > 0 {
		return usagef(fs.Name(), "unexpected argument %q", pos[0])
	}
	return err
}

// parseArgs is parseFlags for a command that also takes positional
// arguments, before, between or after its flags: it returns them.
func parseArgs(fs *flag.FlagSet, args []string, usage string) ([]string, error) {
	var pos []string
	for {
		if err := parseOnce(fs, args, usage); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
}

func parseOnce(fs *flag.FlagSet, args []string, usage string) error {
	var buf bytes.Buffer
	fs.SetOutput(&buf)
	fs.Usage = func() {
		fmt.Fprintf(&buf, "usage: sandboxapi %s\n", strings.TrimRight(usage, "\n"))
		var n int
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(&buf, "\nflags:")
			fs.PrintDefaults()
		}
	}
	err := fs.Parse(args)
	fs.SetOutput(os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Stdout.Write(buf.Bytes())
		return flag.ErrHelp
	case err != nil:
		os.Stderr.Write(buf.Bytes())
		return usageError{err: err, printed: true}
	}
	return nil
}

// isHelp says whether a command's only argument asks for its help.
func isHelp(args []string) bool {
	return len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help")
}

// version is what this binary was built from: the main module's version,
// which the go command derives from the VCS (a tag, or a pseudo-version of
// the commit, "+dirty" for uncommitted changes), else the VCS revision
// itself; with the Go toolchain that built it.
func version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "sandboxapi (no build information)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	v := info.Main.Version
	rev := settings["vcs.revision"]
	switch {
	case v != "" && v != "(devel)":
		if rev != "" && !strings.Contains(v, shortRev(rev)) {
			v += " (" + shortRev(rev) + ")"
		}
	case rev != "":
		v = shortRev(rev)
		if settings["vcs.modified"] == "true" {
			v += "+dirty"
		}
	default:
		v = "(devel, no VCS information)"
	}
	return fmt.Sprintf("sandboxapi %s %s", v, info.GoVersion)
}

// shortRev is the 12 hex digits a Go pseudo-version carries.
func shortRev(rev string) string { return rev[:min(12, len(rev))] }
