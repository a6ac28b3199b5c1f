package langs

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestVersionCommandsKeepNothing runs each installed language's version
// command the way Detect does at every start, with a private, empty /tmp
// and HOME: what is left there is a file the service keeps outside its
// data dir and cache (issue #13). javac's JVM left /tmp/hsperfdata_USER,
// and `go version` its telemetry counters under ~/.config/go.
func TestVersionCommandsKeepNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a private /tmp (unshare -m)")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1) for a private /tmp")
	}
	for _, l := range BuiltinIn(t.TempDir()) {
		t.Run(l.ID, func(t *testing.T) {
			if _, err := os.Stat(l.Binary); err != nil {
				t.Skipf("%s is not installed", l.Binary)
			}
			// XDG_CONFIG_HOME and friends unset, as for a service run
			// from a plain root shell or systemd.
			script := `mount --make-rprivate / && mount -t tmpfs tmpfs /tmp && mkdir /tmp/home && cd /tmp/home &&
env -u XDG_CONFIG_HOME -u XDG_CACHE_HOME -u XDG_DATA_HOME HOME=/tmp/home "$@" >/dev/null 2>&1; find /tmp -mindepth 1 ! -path /tmp/home`
			out, err := exec.Command(unshare, append([]string{"-m", "sh", "-c", script, "sh"}, l.VersionArgv...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if left := strings.TrimSpace(string(out)); left != "" {
				t.Errorf("%s left behind:\n%s", strings.Join(l.VersionArgv, " "), left)
			}
		})
	}
}
