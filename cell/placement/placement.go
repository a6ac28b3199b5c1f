// Package placement is where a cell's things live, written into their ids:
// a session's id names the node that holds its sandbox, so the gateway
// sends every request for it there without looking anything up.
package placement

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
)

// SessionPrefix starts every session id.
const SessionPrefix = "sess_"

// maxNodeID bounds a node id, which every session id it holds repeats.
const maxNodeID = 40

// ErrBadNodeID is returned by CheckNodeID.
var ErrBadNodeID = errors.New("placement: bad node id")

// CheckNodeID insists on what a session id can carry and a URL path, a
// memberlist name and a raft server id all take as they are: 1 to 40 of
// a-z, 0-9 and '-', starting with a letter or digit.
func CheckNodeID(id string) error {
	if id == "" || len(id) > maxNodeID || id[0] == '-' {
		return fmt.Errorf("%w %q: 1 to %d of a-z, 0-9 and '-', not starting with '-'", ErrBadNodeID, id, maxNodeID)
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w %q: 1 to %d of a-z, 0-9 and '-', not starting with '-'", ErrBadNodeID, id, maxNodeID)
		}
	}
	return nil
}

// NewSessionID returns a new id for a session held by node:
// "sess_" NODE "_" and 26 random base-32 characters (130 bits), so ids
// cannot be guessed.
func NewSessionID(node string) string {
	return SessionPrefix + node + "_" + strings.ToLower(rand.Text())
}

// SessionNode returns the node a session id names. Ids made before ids
// carried their node ("sess_" and the random part alone) name none.
func SessionNode(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, SessionPrefix)
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '_')
	if i <= 0 {
		return "", false
	}
	node := rest[:i]
	if CheckNodeID(node) != nil {
		return "", false
	}
	return node, true
}
