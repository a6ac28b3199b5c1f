package directory

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/sandboxapi/sandboxapi/billing/dbshare"
	"github.com/sandboxapi/sandboxapi/cell/celltls"
)

// Files is a Directory's configuration as the gateway's modules take it
// (sandboxapi_auth's and sandboxapi_limits' "accounts" object): secrets
// and certificates by file.
type Files struct {
	// Nodes are API addresses (host:port) of the home cell's nodes.
	Nodes []string `json:"nodes"`
	// Gateway is this gateway's id.
	Gateway string `json:"gateway"`
	// CellSecretFile holds the cell secret.
	CellSecretFile string `json:"cell_secret_file"`
	// TLSCAFile, TLSCertFile and TLSKeyFile are the cell's TLS: the CA,
	// and this gateway's certificate and key. All three or none.
	TLSCAFile   string `json:"tls_ca_file,omitempty"`
	TLSCertFile string `json:"tls_cert_file,omitempty"`
	TLSKeyFile  string `json:"tls_key_file,omitempty"`
	// Logger is where the copy logs (the feed failing over, the copy
	// loaded); nil for slog.Default() at open. The first to open a shared
	// copy gives it its logger.
	Logger *slog.Logger `json:"-"`
}

// minSecretLen is the shortest cell secret accepted, as sandboxapi_auth's.
const minSecretLen = 16

// config reads the files.
func (f Files) config(logger *slog.Logger) (Config, error) {
	if len(f.Nodes) == 0 || f.Gateway == "" || f.CellSecretFile == "" {
		return Config{}, errors.New("directory: accounts needs nodes, gateway and cell_secret_file")
	}
	raw, err := os.ReadFile(f.CellSecretFile)
	if err != nil {
		return Config{}, fmt.Errorf("directory: reading the cell secret: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(raw)))
	if len(secret) < minSecretLen {
		return Config{}, fmt.Errorf("directory: the cell secret in %s is shorter than %d bytes", f.CellSecretFile, minSecretLen)
	}
	cfg := Config{Nodes: f.Nodes, Secret: secret, Gateway: f.Gateway, Logger: logger}
	set, err := celltls.FilesSet(f.TLSCAFile, f.TLSCertFile, f.TLSKeyFile)
	if err != nil {
		return Config{}, fmt.Errorf("directory: %w", err)
	}
	if set {
		b, err := celltls.Load(f.TLSCAFile, f.TLSCertFile, f.TLSKeyFile)
		if err != nil {
			return Config{}, fmt.Errorf("directory: %w", err)
		}
		cfg.TLS = b.Client()
	}
	return cfg, nil
}

// shared holds the Directories handed out by OpenShared, by their Files:
// the auth and limits modules of a gateway, and its admin socket, share
// one copy of the table, and a reloading config's new modules find the
// copy the old ones use.
var shared = dbshare.New(func(key string) (*Directory, error) {
	var f Files
	if err := json.Unmarshal([]byte(key), &f); err != nil {
		return nil, err
	}
	return f.open()
}, (*Directory).Close)

// open opens the Directory f describes, logging to f.Logger.
func (f Files) open() (*Directory, error) {
	cfg, err := f.config(cmp.Or(f.Logger, slog.Default()))
	if err != nil {
		return nil, err
	}
	return Open(cfg)
}

// OpenShared returns the process-wide Directory for f, opening it on first
// use, and a release func to call once when done; the Directory closes
// when its last user releases it.
func OpenShared(f Files) (*Directory, func() error, error) {
	key, err := json.Marshal(f)
	if err != nil {
		return nil, nil, err
	}
	// The key is f without its Logger (json:"-"): the first opener's
	// logger is the copy's.
	d, release, err := shared.AcquireKeyWith(string(key), f.open)
	if err != nil {
		return nil, nil, err
	}
	return d, release, nil
}
