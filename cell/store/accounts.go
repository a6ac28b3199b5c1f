package store

import (
	"context"
	"fmt"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
)

// The accounts table is the billing state (accounts, key hashes, Stripe
// events, quota leases) of the cell that is the accounts' home: every
// gateway sends its writes here and keeps a copy fed from here
// (billing/directory). The table's operations are billing/accounts'; this
// file only carries them through the log.

// ApplyAccounts writes op through raft and returns the table's answer. An
// operation the table refused is answered in the Result (Result.Err), not
// as this method's error, which is the log's: no leader, a lost write.
func (s *Store) ApplyAccounts(ctx context.Context, op accounts.Op) (accounts.Result, error) {
	return applyAs[accounts.Result](ctx, s, CmdAccounts, op)
}

// Accounts calls read with the accounts table and the index applied, under
// the state's read lock: read must not keep the table or change it.
func (s *Store) Accounts(read func(t *accounts.Table, applied uint64)) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	read(s.fsm.st.Accounts, s.fsm.applied)
}

func applyAccounts(st *state, payload []byte) (any, error) {
	var op accounts.Op
	if err := decodePayload(CmdAccounts, payload, &op); err != nil {
		return nil, err
	}
	if st.Accounts == nil {
		st.Accounts = accounts.NewTable()
	}
	// Refusals are answers, not errors: they cross a forward as data and
	// keep their sentinel (accounts.Result.Err).
	res := st.Accounts.Apply(st.applying, op)
	if res.Error != nil && res.Error.Name == "" {
		return nil, fmt.Errorf("store: accounts %s: %s", op.Name, res.Error.Message)
	}
	return res, nil
}
