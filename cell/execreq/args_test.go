package execreq

import (
	"net/http"
	"reflect"
	"testing"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/execreq/execreqtest"
)

func TestCompilerOptionAllowlist(t *testing.T) {
	tests := []struct {
		lang, opts string
		ok         bool
	}{
		{"c", "-O0 -O3 -Os -g -Wall -Wextra -Werror -pedantic -std=gnu11 -lm -pthread -march=native", true},
		{"c", "-DDEBUG -DN=10 -UNDEBUG -fno-strict-aliasing", true},
		{"c", "-std=c++17", false},
		{"c", "-I/etc", false},
		{"c", "@/etc/passwd", false},
		{"c", "-specs=x", false},
		{"c", "-wrapper /bin/sh", false},
		{"cpp", "-std=c++20 -O2 -fno-exceptions", true},
		{"cpp", "-std=c17", false},
		{"rust", "-C opt-level=3 -Cdebuginfo=1 -g --edition 2021 -A warnings -Dunused_variables", true},
		{"rust", "-O", false},
		{"rust", "-C linker=/bin/sh", false},
		{"rust", "--extern x=/y", false},
		{"go", `-trimpath -gcflags="all=-N -l" -ldflags="-s -w" -tags=netgo`, true},
		{"go", "-toolexec=/bin/sh", false},
		{"java", "-g -Xlint:all,-serial -deprecation --release 17", true},
		{"java", "-encoding UTF-8", false},
		{"java", "-processorpath /x", false},
		{"typescript", "--strict --target ES2022 --module commonjs --lib es2022,dom", true},
		{"typescript", "--outDir /tmp", false},
		{"csharp", "-optimize+ -unsafe -langversion:latest -define:DEBUG;TRACE /nowarn:168", true},
		{"csharp", "-reference:/x.dll", false},
		{"bash", "-x", false},
		{"ruby", "", true},
		{"javascript", "  ", true},
	}
	for _, tc := range tests {
		t.Run(tc.lang+" "+tc.opts, func(t *testing.T) {
			_, err := CompilerOptions(tc.opts, tc.lang)
			if tc.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tc.ok {
				execreqtest.WantError(t, err, http.StatusBadRequest, apierror.OptionNotAllowed)
			}
		})
	}
}

func TestSplitWords(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"   ", nil},
		{"a b\tc\nd", []string{"a", "b", "c", "d"}},
		{`"a b" 'c d'`, []string{"a b", "c d"}},
		{`a\ b`, []string{"a b"}},
		{`"" x`, []string{"", "x"}},
		{`$HOME $(id) * ~ ; | &&`, []string{"$HOME", "$(id)", "*", "~", ";", "|", "&&"}},
		{`don"'"t`, []string{"don't"}},
		{`a#b #c`, []string{"a#b"}}, // a word-initial # starts a comment, as in sh
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := SplitWords(tc.in, "command_line_arguments")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
