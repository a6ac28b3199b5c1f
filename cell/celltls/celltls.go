// Package celltls is the cell's own PKI: a cell CA, the certificates it
// issues to the cell's members (nodes and gateways), and the TLS
// configurations that raft and node-to-node API traffic use, so that a
// host without a certificate from the cell CA can neither join raft nor
// be served by a node (DESIGN.md). Everything here is crypto/tls and
// crypto/x509 of the standard library.
package celltls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Roles a member certificate is issued for.
const (
	RoleNode    = "node"
	RoleGateway = "gateway"
)

// The DNS names every certificate of a role carries, whatever host it is
// on. Clients verify a node by NodeName rather than by the host they
// dialled, since nodes are found through gossip and raft by address
// (DESIGN.md, "Names").
const (
	NodeName    = "node.sandboxapi"
	GatewayName = "gateway.sandboxapi"
)

// File names in a CA's or a member's directory.
const (
	CAFile    = "ca.pem"
	CAKeyFile = "ca-key.pem"
	CertFile  = "cert.pem"
	KeyFile   = "key.pem"
)

// Default lifetimes (DESIGN.md, "Rotation").
const (
	DefaultCAValidity     = 10 * 365 * 24 * time.Hour
	DefaultMemberValidity = 365 * 24 * time.Hour
	// clockSkew backdates a certificate, so a host whose clock is a
	// little behind the issuer's accepts it at once.
	clockSkew = 5 * time.Minute
)

var (
	// ErrInvalid is wrapped by every error about a bad request, file or
	// certificate.
	ErrInvalid = errors.New("celltls: invalid")
	// ErrExists is wrapped when a CA would overwrite another's key.
	ErrExists = errors.New("celltls: already exists")
)

// RoleName is the fixed DNS name of role's certificates, "" for an
// unknown role.
func RoleName(role string) string {
	switch role {
	case RoleNode:
		return NodeName
	case RoleGateway:
		return GatewayName
	}
	return ""
}

// CA is a cell's certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// PEM is Cert, PEM-encoded, as written to ca.pem.
	PEM []byte
}

// NewCA makes a CA for cell, valid for validity (DefaultCAValidity when
// zero), in memory.
func NewCA(cell string, validity time.Duration) (*CA, error) {
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("celltls: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: strings.TrimSpace("sandboxapi cell CA " + cell), Organization: []string{"sandboxapi"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// It signs member certificates only, never another CA.
		MaxPathLenZero: true,
		SubjectKeyId:   keyID(&key.PublicKey),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("celltls: CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("celltls: CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Write writes the CA to dir as ca.pem and ca-key.pem (0600). It never
// replaces a CA key already there: every certificate of the cell hangs
// on it.
func (ca *CA) Write(dir string) error {
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("celltls: %w", err)
	}
	if err := writeNew(filepath.Join(dir, CAKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CAFile), ca.PEM, 0o644)
}

// LoadCA reads the CA that Write wrote to dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("celltls: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("celltls: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: CA in %s: %w", ErrInvalid, dir, err)
	}
	key, ok := pair.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !pair.Leaf.IsCA {
		return nil, fmt.Errorf("%w: %s does not hold a CA certificate and its ECDSA key", ErrInvalid, dir)
	}
	return &CA{Cert: pair.Leaf, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Leaf.Raw})}, nil
}

// Request is what a member certificate is issued for.
type Request struct {
	Role string // RoleNode or RoleGateway
	// Name names the member (a node's id, a gateway's host name): the
	// certificate's common name, for logs and audits.
	Name string
	// Hosts are further names and IP addresses the certificate is valid
	// for, as SANs (a node's host name, for operators' own tools).
	Hosts []string
	// Validity is the certificate's lifetime, DefaultMemberValidity when
	// zero.
	Validity time.Duration
	// NotBefore is when it starts, a few minutes ago when zero (tests
	// issue certificates already expired with it).
	NotBefore time.Time
}

// nameRE is what a member's name may be: a node id or a host name.
var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]{0,62}[a-z0-9])?$`)

// hostRE is what a host SAN may be: a DNS name.
var hostRE = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$`)

// Member is an issued certificate and its key, PEM-encoded.
type Member struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
}

// Issue signs a member certificate for req: server and client auth, the
// role's fixed DNS name, req.Hosts.
func (ca *CA) Issue(req Request) (*Member, error) {
	roleName := RoleName(req.Role)
	if roleName == "" {
		return nil, fmt.Errorf("%w: role %q (want %s or %s)", ErrInvalid, req.Role, RoleNode, RoleGateway)
	}
	if !nameRE.MatchString(req.Name) {
		return nil, fmt.Errorf("%w: name %q (lower-case letters, digits, dots and dashes)", ErrInvalid, req.Name)
	}
	dns, ips := []string{roleName}, []net.IP(nil)
	for _, h := range req.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		// The role names come from the role alone: a gateway must never
		// be issued the name nodes are verified by.
		if !hostRE.MatchString(h) || h == NodeName || h == GatewayName {
			return nil, fmt.Errorf("%w: host %q", ErrInvalid, h)
		}
		if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	validity := req.Validity
	if validity <= 0 {
		validity = DefaultMemberValidity
	}
	notBefore := req.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-clockSkew)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("celltls: key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName: req.Name, OrganizationalUnit: []string{req.Role}, Organization: []string{"sandboxapi"},
		},
		NotBefore:   notBefore,
		NotAfter:    notBefore.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    dns,
		IPAddresses: ips,
		// One CA signs for the whole cell: a member's name lets an audit
		// tell certificates apart; the role name is what peers check.
		SubjectKeyId:          keyID(&key.PublicKey),
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("celltls: certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("celltls: certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Member{CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM, Cert: cert}, nil
}

// IssueBundle issues req and loads it as the member would, trusting ca
// alone: for members set up in one process (tests, nodetest's cells).
func (ca *CA) IssueBundle(req Request) (*Bundle, error) {
	m, err := ca.Issue(req)
	if err != nil {
		return nil, err
	}
	return New(ca.PEM, m.CertPEM, m.KeyPEM)
}

// Write writes the member's cert.pem, key.pem (0600) and the CA's
// ca.pem to dir: what its host needs, and nothing of the CA's key.
func (m *Member) Write(dir string, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("celltls: %w", err)
	}
	if err := writeFile(filepath.Join(dir, KeyFile), m.KeyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, CertFile), m.CertPEM, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, CAFile), caPEM, 0o644)
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("celltls: serial: %w", err)
	}
	return serial, nil
}

// keyID is a subject key id: a hash of the public key, as RFC 7093's
// first method (the leftmost bits of its SHA-256).
func keyID(pub *ecdsa.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(der)
	return sum[:20]
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("celltls: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeNew writes a file that must not exist yet.
func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("celltls: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("celltls: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("celltls: %w", err)
	}
	return nil
}

// writeFile replaces path through a temporary file, so a reader never
// sees half a key; the mode is set even when the file was there.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeNew(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("celltls: %w", err)
	}
	return nil
}
