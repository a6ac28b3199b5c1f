package callerauth

import "testing"

func TestSandboxToken(t *testing.T) {
	secret := []byte("0123456789abcdef0123")
	token := SandboxToken(secret, "acct_a", "sess_n1_x")
	tests := []struct {
		name, token, sandbox string
		secret               []byte
		ok                   bool
	}{
		{"its own sandbox", token, "sess_n1_x", secret, true},
		{"another sandbox", token, "sess_n1_y", secret, false},
		{"another secret", token, "sess_n1_x", []byte("another secret, 20+ bytes"), false},
		{"account changed", "sbt1.acct_b" + token[len("sbt1.acct_a"):], "sess_n1_x", secret, false},
		{"not a token", "hello", "sess_n1_x", secret, false},
		{"no account", "sbt1." + token[len("sbt1.acct_a."):], "sess_n1_x", secret, false},
		{"empty", "", "", secret, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			account, ok := VerifySandboxToken(tt.secret, tt.token, tt.sandbox)
			if ok != tt.ok || (ok && account != "acct_a") {
				t.Errorf("VerifySandboxToken = %q, %v; want ok %v for acct_a", account, ok, tt.ok)
			}
		})
	}
}
