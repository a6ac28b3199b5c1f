package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/celltls"
)

const certUsage = `usage: sandboxapi cert <command> [flags]

Makes the cell's TLS certificates (cell/celltls/DESIGN.md): a cell CA, and
certificates it issues to nodes and gateways, which raft, node-to-node
calls and the gateway's calls to nodes then require. Keep the CA's
directory off the cell's hosts; copy each member's directory to its host.

commands:
  ca --out DIR [--cell NAME] [--days N]
            make a cell CA: DIR/ca.pem and DIR/ca-key.pem (0600)
  issue --ca DIR --role node|gateway --name NAME [--host H]... --out DIR [--days N]
            issue a member certificate: DIR/cert.pem, DIR/key.pem (0600)
            and a copy of DIR/ca.pem, the files tls_ca_file, tls_cert_file
            and tls_key_file name
`

func runCert(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, certUsage)
		return usageError{err: errors.New("cert: a command is required"), printed: true}
	}
	switch {
	case isHelp(args[:1]):
		fmt.Print(certUsage)
		return nil
	case args[0] == "ca":
		return certCA(args[1:])
	case args[0] == "issue":
		return certIssue(args[1:])
	}
	return usagef("cert", "unknown command %q", args[0])
}

func certCA(args []string) error {
	fs := flag.NewFlagSet("cert ca", flag.ContinueOnError)
	out := fs.String("out", "", "the directory to write ca.pem and ca-key.pem to (required); an existing CA key there is never replaced")
	cell := fs.String("cell", "", "the cell's name, in the CA's subject, for people")
	days := fs.Int("days", int(celltls.DefaultCAValidity/(24*time.Hour)), "how many days the CA is valid")
	if err := parseFlags(fs, args, "cert ca --out DIR [flags]\n\nMakes a cell CA (ECDSA P-256)."); err != nil {
		return err
	}
	if *out == "" {
		return usagef(fs.Name(), "--out is required")
	}
	if *days <= 0 {
		return usagef(fs.Name(), "--days must be positive")
	}
	ca, err := celltls.NewCA(*cell, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	if err := ca.Write(*out); err != nil {
		return err
	}
	fmt.Printf("cell CA written: %s (certificate), %s (key: keep it off the cell's hosts), valid until %s\n",
		filepath.Join(*out, celltls.CAFile), filepath.Join(*out, celltls.CAKeyFile), ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	return nil
}

// hostList is a repeatable flag; each value may also be a
// comma-separated list.
type hostList []string

func (l *hostList) String() string { return strings.Join(*l, ",") }

func (l *hostList) Set(s string) error {
	*l = append(*l, splitList(s)...)
	return nil
}

func certIssue(args []string) error {
	fs := flag.NewFlagSet("cert issue", flag.ContinueOnError)
	caDir := fs.String("ca", "", "the CA's directory, as `cert ca --out` wrote it (required)")
	role := fs.String("role", "", "the member's role (required): node or gateway")
	name := fs.String("name", "", "the member's name (required): a node's id, a gateway's host name")
	var hosts hostList
	fs.Var(&hosts, "host", "a host name or IP address the certificate also names, for operators' tools (repeatable)")
	out := fs.String("out", "", "the directory to write the member's files to (required)")
	days := fs.Int("days", int(celltls.DefaultMemberValidity/(24*time.Hour)), "how many days the certificate is valid")
	if err := parseFlags(fs, args, "cert issue --ca DIR --role node|gateway --name NAME [--host H]... --out DIR [flags]\n\nIssues a member certificate of the cell CA."); err != nil {
		return err
	}
	for _, f := range []struct{ flag, value string }{{"--ca", *caDir}, {"--role", *role}, {"--name", *name}, {"--out", *out}} {
		if f.value == "" {
			return usagef(fs.Name(), "%s is required", f.flag)
		}
	}
	if celltls.RoleName(*role) == "" {
		return usagef(fs.Name(), "--role %q: want %s or %s", *role, celltls.RoleNode, celltls.RoleGateway)
	}
	if *days <= 0 {
		return usagef(fs.Name(), "--days must be positive")
	}
	ca, err := celltls.LoadCA(*caDir)
	if err != nil {
		return err
	}
	m, err := ca.Issue(celltls.Request{Role: *role, Name: *name, Hosts: hosts, Validity: time.Duration(*days) * 24 * time.Hour})
	if errors.Is(err, celltls.ErrInvalid) {
		return usagef(fs.Name(), "%v", err)
	}
	if err != nil {
		return err
	}
	if err := m.Write(*out, ca.PEM); err != nil {
		return err
	}
	names := append(append([]string{}, m.Cert.DNSNames...), func() (ips []string) {
		for _, ip := range m.Cert.IPAddresses {
			ips = append(ips, ip.String())
		}
		return ips
	}()...)
	fmt.Printf("%s certificate for %s written to %s (%s, %s, %s): names %s, valid until %s\n",
		*role, *name, *out, celltls.CertFile, celltls.KeyFile, celltls.CAFile, strings.Join(names, ", "), m.Cert.NotAfter.UTC().Format(time.DateOnly))
	return nil
}
