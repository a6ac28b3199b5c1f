package callerauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
)

// A sandbox token lets a client reach one sandbox without its API key:
// E2B's SDKs send their key only to the control API, and every request to
// a sandbox's envd carries the sandbox's access token (X-Access-Token)
// and its id (E2b-Sandbox-Id) instead. The cell's node mints the token
// when it opens the sandbox; the gateway, which shares the cell secret,
// checks it and signs the request as the token's account, so the request
// meets the account's limits and quota as one with the key would. The
// token names its account and is bound to one sandbox id: it opens no
// other sandbox, and none of another account.

// sandboxTokenPrefix starts every sandbox token (its version).
const sandboxTokenPrefix = "sbt1."

// SandboxToken is the access token of account's sandbox id.
func SandboxToken(secret []byte, account, sandbox string) string {
	return sandboxTokenPrefix + account + "." + sandboxMAC(secret, account, sandbox)
}

// VerifySandboxToken returns the account whose token for sandbox token
// is; ok is false for a token that is not one, or is another sandbox's.
func VerifySandboxToken(secret []byte, token, sandbox string) (account string, ok bool) {
	rest, found := strings.CutPrefix(token, sandboxTokenPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !found || i <= 0 || sandbox == "" {
		return "", false
	}
	account, sig := rest[:i], rest[i+1:]
	if !hmac.Equal([]byte(sig), []byte(sandboxMAC(secret, account, sandbox))) {
		return "", false
	}
	return account, true
}

func sandboxMAC(secret []byte, account, sandbox string) string {
	m := hmac.New(sha256.New, secret)
	// Not Sign's message: a caller signature is never a sandbox token.
	m.Write([]byte("sandboxapi-sandbox-token-v1\n" + account + "\n" + sandbox))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
