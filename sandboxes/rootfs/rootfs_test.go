package rootfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sandboxapi/sandboxapi/sandboxes/langs"
)

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	initBin := filepath.Join(dir, "init")
	if err := os.WriteFile(initBin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := Build(root, initBin); err != nil {
		t.Fatal(err)
	}
	// Rebuilding replaces the root whole.
	if err := Build(root, initBin); err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{"usr", "proc", "work", "tmp", "etc"}, langs.MountPoints()...) {
		if info, err := os.Stat(filepath.Join(root, d)); err != nil || !info.IsDir() {
			t.Errorf("mount point %s: %v", d, err)
		}
	}
	if info, err := os.Stat(filepath.Join(root, InitPath)); err != nil || info.Mode().Perm() != 0o755 {
		t.Errorf("init: %v %v", info, err)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc", "passwd"))
	if err != nil || !strings.Contains(string(passwd), UserName+":x:1000:1000:") || strings.Contains(string(passwd), "$") {
		t.Errorf("passwd %q %v: want the generated one", passwd, err)
	}
	// Nothing of the host's /etc that is not world-readable comes along.
	err = filepath.Walk(filepath.Join(root, "etc"), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() && info.Mode().Perm()&0o004 == 0 {
			t.Errorf("%s is not world-readable", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc", "shadow")); err == nil {
		t.Error("the host's shadow file was copied")
	}
	if left, _ := filepath.Glob(root + ".*"); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
