package langs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// stampFile, in a prepared directory, records what it was built for.
const stampFile = "sandboxapi-stamp"

// ensureBuilt makes dir a directory that build filled for stamp, unless its
// stamp already says so. Processes that share dir (two services, parallel
// test binaries) take turns on a lock file beside it, and build works on a
// new directory that is renamed into place, so a sandbox never mounts half
// a build and a failed build leaves the old one.
func ensureBuilt(dir, stamp string, build func(tmp string) error) error {
	// Prepared directories may be world-writable inside (Go's cache is):
	// keep the host's other users out of the directory that holds them,
	// which is ours, even if something else made it.
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	return underLock(dir, func() bool { return current(dir, stamp) }, func() error { return buildInto(dir, stamp, build) })
}

// underLock runs do holding the lock file beside dir, unless done says
// the work is there already, before the lock or once it is held: the
// processes that share dir take turns, and the later ones find it done.
func underLock(dir string, done func() bool, do func() error) error {
	if done() {
		return nil
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if done() {
		return nil
	}
	return do()
}

// buildInto fills a new directory with build and renames it to dir.
func buildInto(dir, stamp string, build func(tmp string) error) error {
	tmp := dir + ".new"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return err
	}
	if err := build(tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, stampFile), []byte(stamp), 0o644); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	old := dir + ".old"
	_ = os.RemoveAll(old)
	if err := os.Rename(dir, old); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return os.RemoveAll(old)
}

func current(dir, stamp string) bool {
	b, err := os.ReadFile(filepath.Join(dir, stampFile))
	return err == nil && string(b) == stamp
}
