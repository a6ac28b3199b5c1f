package guest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// displayMsg is one rich output as a driver writes it on fd 4.
func displayMsg(payload string) string {
	return fmt.Sprintf("d%08x%s", len(payload), payload)
}

// A driver's fd 4: statuses go to the execution, rich outputs on as
// frames while a display step's gate is open and within its budget, a
// large one in parts; garbage and what comes with the gate closed never
// reach the host, and the reader keeps going.
func TestReadControl(t *testing.T) {
	big := `{"data":{"text/plain":"` + strings.Repeat("x", wire.MaxFramePayload+10) + `"}}`
	tests := []struct {
		name      string
		budget    int64
		closed    bool
		write     string
		want      []string // the messages the frames make
		parts     int      // FrameDisplayPart frames among them
		truncated bool
	}{
		{name: "two outputs", budget: 1 << 20, write: displayMsg(`{"main":true}`) + displayMsg(`{"b":2}`) + "0\n", want: []string{`{"main":true}`, `{"b":2}`}},
		{name: "larger than a frame", budget: 4 << 20, write: displayMsg(big) + "0\n", want: []string{big}, parts: 1},
		{name: "over the budget", budget: 20, write: displayMsg(`{"a":1}`) + displayMsg(strings.Repeat("y", 30)) + displayMsg(`{"c":3}`) + "0\n", want: []string{`{"a":1}`, `{"c":3}`}, truncated: true},
		{name: "gate closed", closed: true, write: displayMsg(`{"a":1}`) + "0\n"},
		{name: "garbage", budget: 1 << 20, write: "dzzzzzzzz" + strings.Repeat("q", 5000) + "\n" + displayMsg(`{"a":1}`) + "0\n", want: []string{`{"a":1}`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr, pw, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			buf := &lockedBuffer{}
			r := &replProc{statuses: make(chan int, 4), display: displayGate{out: &frameWriter{w: buf}}}
			if !tc.closed {
				r.display.open(1, tc.budget)
			}
			go r.readControl(pr)
			go func() { _, _ = io.WriteString(pw, tc.write); pw.Close() }()
			select {
			case st := <-r.statuses:
				if st != 0 {
					t.Fatalf("status %d", st)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no status")
			}
			if got := r.display.close(); got != tc.truncated {
				t.Errorf("truncated %v, want %v", got, tc.truncated)
			}
			var msgs []string
			var cur []byte
			parts := 0
			rd := bytes.NewReader([]byte(buf.String()))
			for {
				ft, p, err := wire.ReadFrame(rd)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				cur = append(cur, p...)
				switch ft {
				case wire.FrameDisplayPart:
					parts++
				case wire.FrameDisplay:
					msgs = append(msgs, string(cur))
					cur = nil
				default:
					t.Fatalf("frame %c", ft)
				}
			}
			if len(msgs) != len(tc.want) || parts != tc.parts {
				t.Fatalf("%d messages in %d parts, want %d in %d", len(msgs), parts, len(tc.want), tc.parts)
			}
			for i := range msgs {
				if msgs[i] != tc.want[i] {
					t.Errorf("message %d: %.40q, want %.40q", i, msgs[i], tc.want[i])
				}
			}
		})
	}
}
