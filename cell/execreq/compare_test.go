package execreq

import "testing"

func TestCompareOutput(t *testing.T) {
	tests := []struct {
		stdout, expected string
		match            bool
	}{
		{"", "", true},
		{"4\n", "4", true},
		{"4", "4\n\n\n", true},
		{"a \nb\t\n", "a\nb", true},
		{"a\r\nb\r\n", "a\nb\n", true},
		{"4\n", "5\n", false},
		{" 4", "4", false},        // leading whitespace counts
		{"a\n\nb", "a\nb", false}, // inner blank lines count
		{"A", "a", false},
		{"a\nb", "a", false},
		{"a", "a\nb", false},
		{"", "x", false},
	}
	for _, tc := range tests {
		diff := CompareOutput([]byte(tc.stdout), []byte(tc.expected))
		if (diff == "") != tc.match {
			t.Errorf("CompareOutput(%q, %q) = %q, want match %v", tc.stdout, tc.expected, diff, tc.match)
		}
	}
}
