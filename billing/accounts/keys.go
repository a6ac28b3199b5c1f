package accounts

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
)

// hintLen is how much of a key its hint shows: the prefix and four
// characters, 24 of the key's 256 random bits, too few to help a guess.
const hintLen = len(KeyPrefix) + 4

// HashKey is the form a key is stored and looked up in: hex SHA-256.
func HashKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// KeyHint is the start of a key, to tell keys apart in listings.
func KeyHint(key string) string {
	if len(key) <= hintLen {
		return key
	}
	return key[:hintLen] + "…"
}

// NewKey makes a new random key and what the Table stores of it.
func NewKey() (string, NewKeyArgs, error) {
	key, err := randomKey()
	if err != nil {
		return "", NewKeyArgs{}, err
	}
	args, err := KeyArgs(key)
	return key, args, err
}

// KeyArgs is what the Table stores of a key chosen by the caller (the dev
// key): its hash, hint and a new id.
func KeyArgs(key string) (NewKeyArgs, error) {
	if err := validateKey(key); err != nil {
		return NewKeyArgs{}, err
	}
	id, err := randomID("key_", 8)
	if err != nil {
		return NewKeyArgs{}, err
	}
	return NewKeyArgs{ID: id, Hash: HashKey(key), Hint: KeyHint(key)}, nil
}

// NewAccountID makes a new random account id.
func NewAccountID() (string, error) {
	return randomID("acct_", 12)
}

// Changes are the records changed after a log index, for a gateway's copy.
type Changes struct {
	// Index is the index the Table had applied: ask after it next.
	Index    uint64          `json:"index"`
	Accounts []AccountRecord `json:"accounts,omitempty"`
	Keys     []KeyRecord     `json:"keys,omitempty"`
	Usage    []UsageRecord   `json:"usage,omitempty"`
}

// Empty says whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Accounts) == 0 && len(c.Keys) == 0 && len(c.Usage) == 0
}

// ChangesAfter returns every record changed after index; applied is the
// Table's own applied index, which the Changes carry.
func (t *Table) ChangesAfter(index, applied uint64) Changes {
	c := Changes{Index: applied}
	for _, a := range t.Accounts {
		if a.Index > index {
			c.Accounts = append(c.Accounts, *a)
		}
	}
	for _, k := range t.Keys {
		if k.Index > index {
			c.Keys = append(c.Keys, *k)
		}
	}
	for _, u := range t.Usage {
		if u.Index > index {
			c.Usage = append(c.Usage, *u)
		}
	}
	// A stable order, for tests and for readers of the feed.
	slices.SortFunc(c.Accounts, func(a, b AccountRecord) int { return cmpIndex(a.Index, b.Index, a.ID, b.ID) })
	slices.SortFunc(c.Keys, func(a, b KeyRecord) int { return cmpIndex(a.Index, b.Index, a.Hash, b.Hash) })
	slices.SortFunc(c.Usage, func(a, b UsageRecord) int {
		return cmpIndex(a.Index, b.Index, usageKey(a.AccountID, a.Month, a.Gateway), usageKey(b.AccountID, b.Month, b.Gateway))
	})
	return c
}

func cmpIndex(a, b uint64, ka, kb string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	case ka < kb:
		return -1
	case ka > kb:
		return 1
	}
	return 0
}

// Merge applies c to a copy of the Table (a gateway's): records replace
// those they name, unless the copy's is newer (a lagging node's answer).
func (t *Table) Merge(c Changes) {
	t.fill()
	for _, a := range c.Accounts {
		if old, ok := t.Accounts[a.ID]; !ok || old.Index <= a.Index {
			t.putAccount(&a)
		}
	}
	for _, k := range c.Keys {
		if old, ok := t.Keys[k.Hash]; !ok || old.Index <= k.Index {
			t.Keys[k.Hash] = &k
		}
	}
	for _, u := range c.Usage {
		k := usageKey(u.AccountID, u.Month, u.Gateway)
		if old, ok := t.Usage[k]; !ok || old.Index <= u.Index {
			t.putUsage(k, &u)
		}
	}
}

// String names an op for logs.
func (o Op) String() string { return fmt.Sprintf("accounts.%s", o.Name) }
