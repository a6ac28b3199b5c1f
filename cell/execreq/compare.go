package execreq

import (
	"bytes"
	"fmt"
)

// CompareOutput compares a program's stdout with expected_output the way
// Judge0 users expect: line by line, ignoring whitespace at the end of each
// line (spaces, tabs, a "\r" of CRLF) and blank lines at the end of the
// output. Leading whitespace, blank lines in between and letter case count.
// It returns "" when they match, else where they first differ.
func CompareOutput(stdout, expected []byte) string {
	got, want := outputLines(stdout), outputLines(expected)
	for i := range max(len(got), len(want)) {
		switch {
		case i >= len(got):
			return fmt.Sprintf("stdout ends after %d lines; expected_output has %d", len(got), len(want))
		case i >= len(want):
			return fmt.Sprintf("stdout has %d lines; expected_output ends after %d", len(got), len(want))
		case !bytes.Equal(got[i], want[i]):
			return fmt.Sprintf("stdout differs from expected_output at line %d", i+1)
		}
	}
	return ""
}

func outputLines(b []byte) [][]byte {
	lines := bytes.Split(b, []byte("\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimRight(l, " \t\r\f\v")
	}
	for len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}
