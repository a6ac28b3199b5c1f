package celltls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"time"
)

// Bundle is what one member holds: the cell CA's certificates it trusts
// and its own certificate and key.
type Bundle struct {
	roots *x509.CertPool
	cert  tls.Certificate
	leaf  *x509.Certificate
	role  string
}

// FilesSet says whether a member's three files are given: true for all
// three, false for none, and an error wrapping ErrInvalid for some, as
// the cell's TLS needs its CA, its certificate and its key together.
func FilesSet(caFile, certFile, keyFile string) (bool, error) {
	n := 0
	for _, f := range []string{caFile, certFile, keyFile} {
		if f != "" {
			n++
		}
	}
	switch n {
	case 0:
		return false, nil
	case 3:
		return true, nil
	}
	return false, fmt.Errorf("%w: the cell's TLS needs its CA file, certificate file and key file, all three or none", ErrInvalid)
}

// Load reads a member's files: caFile holds one or more CA certificates
// (several while a CA is being replaced, DESIGN.md "Rotation"), certFile
// and keyFile the member's certificate and key. The certificate must be
// one the CAs issued for a role, and be valid now.
func Load(caFile, certFile, keyFile string) (*Bundle, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("celltls: CA file: %w", err)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("celltls: certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("celltls: key file: %w", err)
	}
	b, err := New(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w (files %s, %s, %s)", err, caFile, certFile, keyFile)
	}
	return b, nil
}

// New is Load from PEM in memory.
func New(caPEM, certPEM, keyPEM []byte) (*Bundle, error) {
	roots := x509.NewCertPool()
	n := 0
	for rest := caPEM; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: CA certificate: %w", ErrInvalid, err)
		}
		if !ca.IsCA {
			return nil, fmt.Errorf("%w: CA file holds %q, which is not a CA", ErrInvalid, ca.Subject.CommonName)
		}
		roots.AddCert(ca)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: no CA certificate in the CA file", ErrInvalid)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate and key: %w", ErrInvalid, err)
	}
	leaf := pair.Leaf
	// Checked here so a member set up wrongly fails at start, saying why,
	// rather than at its first handshake.
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("%w: certificate %q: %w", ErrInvalid, leaf.Subject.CommonName, err)
	}
	role := roleOf(leaf)
	if role == "" {
		return nil, fmt.Errorf("%w: certificate %q names no role (%s or %s)", ErrInvalid, leaf.Subject.CommonName, NodeName, GatewayName)
	}
	return &Bundle{roots: roots, cert: pair, leaf: leaf, role: role}, nil
}

// roleOf is the role whose name cert carries, "" for none.
func roleOf(cert *x509.Certificate) string {
	switch {
	case slices.Contains(cert.DNSNames, NodeName):
		return RoleNode
	case slices.Contains(cert.DNSNames, GatewayName):
		return RoleGateway
	}
	return ""
}

// Role is the member's role, RoleNode or RoleGateway.
func (b *Bundle) Role() string { return b.role }

// Name is the member's name, its certificate's common name.
func (b *Bundle) Name() string { return b.leaf.Subject.CommonName }

// NotAfter is when the member's certificate expires.
func (b *Bundle) NotAfter() time.Time { return b.leaf.NotAfter }

// Server is the TLS configuration a node serves its API with: TLS 1.3
// only, and a client certificate from the cell CA required, of a node or
// a gateway.
func (b *Bundle) Server() *tls.Config { return b.server(RoleNode, RoleGateway) }

// server accepts clients with a certificate of one of roles.
func (b *Bundle) server(roles ...string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.cert},
		ClientCAs:    b.roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// The chain was verified against the CA by then; this only says
		// which of the CA's members may connect.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("celltls: no client certificate")
			}
			if r := roleOf(cs.PeerCertificates[0]); !slices.Contains(roles, r) {
				return fmt.Errorf("celltls: client %q has role %q, want one of %v", cs.PeerCertificates[0].Subject.CommonName, r, roles)
			}
			return nil
		},
	}
}

// Client is the TLS configuration a member dials nodes with: TLS 1.3
// only, the member's certificate, and the server verified against the
// cell CA as a node, by NodeName, whatever address was dialled.
func (b *Bundle) Client() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{b.cert},
		RootCAs:      b.roots,
		ServerName:   NodeName,
	}
}
