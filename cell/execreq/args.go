package execreq

import (
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/google/shlex"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// SplitWords splits s into words the way a POSIX shell would, quotes and
// backslashes included, but without running one: nothing is expanded, so
// "$HOME", "*" and "$(id)" arrive in the program's argv as written. An
// unbalanced quote is an error rather than a guess.
func SplitWords(s, field string) ([]string, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, apierror.New(apierror.InvalidArguments, "%s must not contain NUL bytes", field)
	}
	words, err := shlex.Split(s)
	if err != nil {
		return nil, apierror.New(apierror.InvalidArguments, "%s cannot be split into words: %v (check for an unbalanced quote or a trailing backslash)", field, err)
	}
	if len(words) == 0 {
		return nil, nil
	}
	return words, nil
}

// compilerOptionRules is the allowlist of compiler_options, by language id.
// Each rule is a regular expression that must match a whole option, or an
// option and its value written as two words joined by one space ("-C
// opt-level=3"). A language without an entry takes no options at all,
// interpreted languages included, since they have no compile step to give
// them to.
//
// The rules admit what changes code generation, warnings and language
// level. They leave out whatever changes where the compiler reads or writes
// (-o, -I, -B, @file, -specs=, plugins, wrappers): those would break the
// compile and run steps the language defines.
var compilerOptionRules = map[string][]string{
	"c": slices.Concat(gccCommon, []string{
		`-std=(c|gnu)(89|90|99|11|17|18|2x|23)`,
		`-l(m|pthread|rt|dl)`,
	}),
	"cpp": slices.Concat(gccCommon, []string{
		`-std=(c|gnu)\+\+(98|03|11|14|17|20|2a|23|2b|26|2c)`,
		`-l(m|pthread|rt|dl|stdc\+\+fs)`,
		`-fno-(exceptions|rtti)`,
	}),
	// Rust's compile sets -C opt-level, which rustc refuses together with
	// -O; opt-level itself may be given again (the last one wins).
	"rust": {
		`-g`,
		`-C ?(opt-level=[0-3sz]|debuginfo=[0-2]|target-cpu=native|codegen-units=[0-9]{1,3}|panic=(abort|unwind))`,
		`-C ?(overflow-checks|debug-assertions)=(yes|no|on|off|true|false)`,
		`-C ?lto=(yes|no|on|off|true|false|thin|fat)`,
		`--edition[= ](2015|2018|2021|2024)`,
		`-[AWD] ?(warnings|[a-z][a-z0-9_]*(::[a-z][a-z0-9_]*)?)`,
	},
	"go": {
		`-trimpath`,
		`-gcflags=(all=)?-[NlBm]( -[NlBm])*`,
		`-ldflags=-[sw]( -[sw])*`,
		`-tags=[A-Za-z0-9_.,]+`,
	},
	// javac already gets -encoding UTF-8; a second -encoding is an error.
	"java": {
		`-g(:none|:(lines|vars|source)(,(lines|vars|source))*)?`,
		`-nowarn`, `-deprecation`, `-parameters`, `-Werror`,
		`-Xlint(:-?[a-z]+(,-?[a-z]+)*)?`,
		`--release[= ](8|9|1[0-9]|2[0-9])`,
	},
	"csharp": {
		`[-/](optimize|debug|unsafe|checked|warnaserror)[+-]?`,
		`[-/]nowarn:[0-9]{1,5}(,[0-9]{1,5})*`,
		`[-/]langversion:(default|latest|latestmajor|preview|[0-9]{1,2}(\.[0-9])?)`,
		`[-/]define:[A-Za-z_][A-Za-z0-9_]*(;[A-Za-z_][A-Za-z0-9_]*)*`,
	},
	"typescript": {
		`--(strict|noImplicitAny|strictNullChecks|strictFunctionTypes|noImplicitThis|alwaysStrict)`,
		`--(noUnusedLocals|noUnusedParameters|noImplicitReturns|noFallthroughCasesInSwitch)`,
		`--(experimentalDecorators|emitDecoratorMetadata|esModuleInterop|removeComments|sourceMap)`,
		`--target (?i:es5|es6|es20(1[5-9]|2[0-4])|esnext)`,
		`--module (?i:commonjs|es2015|es2020|es2022|esnext|node16|nodenext)`,
		`--lib (?i:(es5|es6|es20(1[5-9]|2[0-4])|esnext|dom)(\.[a-z]+)*(,(es5|es6|es20(1[5-9]|2[0-4])|esnext|dom)(\.[a-z]+)*)*)`,
	},
}

// gccCommon are the rules C and C++ share.
var gccCommon = []string{
	`-O[0-3sgz]?`, `-Ofast`, `-g[0-3]?`, `-w`, `-pedantic`, `-pedantic-errors`,
	`-W(all|extra|error|pedantic|shadow|conversion|sign-conversion|format=2|uninitialized|unused|no-[a-z0-9-]+|error=[a-z0-9-]+)`,
	`-D[A-Za-z_][A-Za-z0-9_]*(=.*)?`, `-U[A-Za-z_][A-Za-z0-9_]*`,
	`-pthread`, `-march=native`, `-mtune=native`,
	`-f(no-)?(strict-aliasing|omit-frame-pointer|fast-math|wrapv|trapv|stack-protector|stack-protector-strong|stack-protector-all|inline|unroll-loops)`,
}

var compiledRules = sync.OnceValue(func() map[string][]*regexp.Regexp {
	out := make(map[string][]*regexp.Regexp, len(compilerOptionRules))
	for lang, rules := range compilerOptionRules {
		for _, r := range rules {
			out[lang] = append(out[lang], regexp.MustCompile(`^(?:`+r+`)$`))
		}
	}
	return out
})

// CompilerOptions checks compiler_options for the language with this id and
// returns them as words.
func CompilerOptions(s, langID string) ([]string, error) {
	if err := CheckChars(s, "compiler_options", MaxCompilerOptionsChars); err != nil {
		return nil, err
	}
	words, err := SplitWords(s, "compiler_options")
	if err != nil {
		return nil, err
	}
	if len(words) == 0 {
		return nil, nil
	}
	rules, ok := compiledRules()[langID]
	if !ok {
		return nil, apierror.New(apierror.OptionNotAllowed, "compiler option %q is not allowed: %s takes no compiler_options", words[0], langID)
	}
	matches := func(opt string) bool {
		for _, r := range rules {
			if r.MatchString(opt) {
				return true
			}
		}
		return false
	}
	for i := 0; i < len(words); i++ {
		if matches(words[i]) {
			continue
		}
		if i+1 < len(words) && matches(words[i]+" "+words[i+1]) {
			i++
			continue
		}
		return nil, apierror.New(apierror.OptionNotAllowed, "compiler option %q is not allowed for %s; docs/api.md lists the allowed options", words[i], langID)
	}
	return words, nil
}
