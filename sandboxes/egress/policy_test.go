package egress

import (
	"errors"
	"slices"
	"testing"
)

func TestParseAllowlist(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
		bad  bool
	}{
		{in: []string{"PyPI.org.", "*.githubusercontent.com", "pypi.org"}, want: []string{"pypi.org", "*.githubusercontent.com"}},
		{in: []string{"*"}, want: []string{"*"}},
		{in: []string{"1.2.3.4"}, bad: true},
		{in: []string{"[::1]"}, bad: true},
		{in: []string{"::1"}, bad: true},
		{in: []string{"0x7f.1"}, bad: true},
		{in: []string{"127.1"}, bad: true},
		{in: []string{"localhost"}, bad: true},
		{in: []string{"*.com.*"}, bad: true},
		{in: []string{"a*.example.com"}, bad: true},
		{in: []string{"exa_mple.com"}, bad: true},
		{in: []string{"-a.example.com"}, bad: true},
		{in: []string{""}, bad: true},
		{in: []string{"*."}, bad: true},
		{in: make([]string, MaxPatterns+1), bad: true},
	} {
		t.Run(fmtList(tc.in), func(t *testing.T) {
			got, err := ParseAllowlist(tc.in)
			if tc.bad {
				if !errors.Is(err, ErrInvalidPattern) {
					t.Fatalf("ParseAllowlist(%q) = %q, %v; want ErrInvalidPattern", tc.in, got, err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tc.want) {
				t.Fatalf("ParseAllowlist(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func fmtList(l []string) string {
	if len(l) > 3 {
		return "many"
	}
	s := ""
	for _, p := range l {
		s += p + ","
	}
	return s
}

func TestIntersect(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		request, plan, operator []string
		want                    []string
	}{
		{"all open", []string{"pypi.org"}, []string{"*"}, []string{"*"}, []string{"pypi.org"}},
		{"plan allows none", []string{"pypi.org"}, nil, []string{"*"}, nil},
		{"operator allows none", []string{"pypi.org"}, []string{"*"}, nil, nil},
		{"narrowed by the plan", []string{"*.github.com"}, []string{"api.github.com"}, []string{"*"}, []string{"api.github.com"}},
		{"wildcard under wildcard", []string{"*.a.example.com"}, []string{"*.example.com"}, []string{"*"}, []string{"*.a.example.com"}},
		{"outside", []string{"evil.com"}, []string{"*.example.com", "pypi.org"}, []string{"*"}, nil},
		{"wildcard is not its apex", []string{"example.com"}, []string{"*.example.com"}, []string{"*"}, nil},
		{"request any", []string{"*"}, []string{"pypi.org", "*.pythonhosted.org"}, []string{"*.org"}, []string{"pypi.org", "*.pythonhosted.org"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Intersect(tc.request, tc.plan, tc.operator); !slices.Equal(got, tc.want) {
				t.Fatalf("Intersect = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	allow := []string{"pypi.org", "*.githubusercontent.com"}
	for _, tc := range []struct {
		host string
		want bool
	}{
		{"pypi.org", true}, {"PYPI.ORG.", true}, {"raw.githubusercontent.com", true},
		{"a.b.githubusercontent.com", true}, {"githubusercontent.com", false},
		{"evilpypi.org", false}, {"pypi.org.evil.com", false}, {"xgithubusercontent.com", false},
		{"151.101.0.223", false}, {"[::1]", false}, {"localhost", false}, {"", false},
	} {
		t.Run(tc.host, func(t *testing.T) {
			if got := Match(allow, tc.host); got != tc.want {
				t.Fatalf("Match(%q) = %v", tc.host, got)
			}
		})
	}
	if Match([]string{Any}, "10.0.0.1") {
		t.Fatal("Any matched an IP literal")
	}
}
