// Command sandbox-init is PID 1 inside every sandbox. It is built static and
// copied into the sandbox root filesystem; see package guest.
package main

import (
	"os"

	"github.com/sandboxapi/sandboxapi/sandboxes/guest"
)

func main() { os.Exit(guest.Main()) }
