// Command sandboxapi is SandboxAPI's one binary. `sandboxapi dev` runs the
// gateway, a single-node cell and its executor in one process; `node` and
// `gateway` run one of each on its own, for cells of several nodes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `usage: sandboxapi <command> [flags]

commands:
  dev       run the gateway and a single-node cell in one process
            (--nodes N [--cells M]: a cluster of processes on loopback)
  node      run one cell node: sandboxapi node --config FILE
  gateway   run the gateway alone: sandboxapi gateway --config FILE
  prepare   build the language caches sandboxes use (make build runs it)
  admin     manage accounts: sandboxapi admin accounts create --plan PLAN;
            show a dev cluster's members: sandboxapi admin cluster
  cert      make the cell's TLS certificates: sandboxapi cert ca --out DIR;
            sandboxapi cert issue --ca DIR --role node|gateway --name NAME --out DIR
  bench     measure the service against native, bubblewrap and runsc do
  pkgcache  build the offline package cache that session installs read
  mcp       serve MCP on stdio for a remote server: sandboxapi mcp --url URL
  version   print the version (also --version)

Run sandboxapi <command> --help for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

// run runs the command line and returns the exit status: 0, 1 when the
// command failed, 2 when the command line is wrong.
func run(args []string) int {
	err := dispatch(args)
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if !ue.printed {
			fmt.Fprintln(os.Stderr, "sandboxapi:", err)
		}
		return 2
	default:
		fmt.Fprintln(os.Stderr, "sandboxapi:", err)
		return 1
	}
}

func dispatch(args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return usageError{err: errors.New("a command is required"), printed: true}
	}
	switch args[0] {
	case "dev":
		return runDev(args[1:])
	case "node":
		return runNode(args[1:])
	case "gateway":
		return runGateway(args[1:])
	case "prepare":
		return runPrepare(args[1:])
	case "admin":
		return runAdmin(args[1:])
	case "cert":
		return runCert(args[1:])
	case "bench":
		return runBench(args[1:])
	case "pkgcache":
		return runPkgcache(args[1:])
	case "mcp":
		return runMCP(args[1:])
	case "version", "--version", "-version":
		if isHelp(args[1:]) {
			fmt.Println("usage: sandboxapi version\n\nPrints the version and the commit this binary was built from.")
			return nil
		}
		if len(args) > 1 {
			return usagef("version", "unexpected argument %q", args[1])
		}
		fmt.Println(version())
		return nil
	case "-h", "--help", "-help", "help":
		fmt.Print(usage)
		return nil
	default:
		fmt.Fprintf(os.Stderr, "sandboxapi: unknown command %q\n\n%s", args[0], usage)
		return usageError{err: fmt.Errorf("unknown command %q", args[0]), printed: true}
	}
}
