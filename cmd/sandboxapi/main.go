// Command sandboxapi is SandboxAPI's one binary. `sandboxapi dev` runs the
// gateway, a single-node cell and its executor in one process.
package main

import (
	"fmt"
	"os"
)

const usage = `usage: sandboxapi <command> [flags]

commands:
  dev       run the gateway and a single-node cell in one process
  bench     measure the service against native, bubblewrap and runsc do
  pkgcache  build the offline package cache that session installs read
  version   print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "dev":
		err = runDev(os.Args[2:])
	case "bench":
		err = runBench(os.Args[2:])
	case "pkgcache":
		err = runPkgcache(os.Args[2:])
	case "version":
		fmt.Println(version())
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "sandboxapi: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sandboxapi:", err)
		os.Exit(1)
	}
}

func version() string {
	return "sandboxapi (dev build)"
}
