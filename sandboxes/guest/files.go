package guest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/sandboxapi/sandboxapi/sandboxes/wire"
)

// overlayScratch holds the overlays' upper and work layers, inside the
// execution's /tmp so they are sized and dropped with it. It is root's and
// closed to the program: changing an overlay's upper layer behind its back
// is undefined, and the program sees its writes through the overlay anyway.
const overlayScratch = "/tmp/.sandboxapi-overlays"

// mountOverlays makes each of the job's overlay targets a writable view of
// its read-only lower directory. The upper layer's root is the sandbox
// user's, so the program can add files at the top of the view; deeper
// directories keep the lower layer's modes.
func mountOverlays(job wire.Job) error {
	if len(job.Overlays) == 0 {
		return nil
	}
	if err := os.MkdirAll(overlayScratch, 0o700); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	for i, o := range job.Overlays {
		if !plainAbs(o.Lower) || !plainAbs(o.Target) || strings.ContainsAny(o.Lower, ",:") {
			return fmt.Errorf("overlay %q on %q: paths must be absolute and plain", o.Lower, o.Target)
		}
		upper := filepath.Join(overlayScratch, strconv.Itoa(i), "upper")
		work := filepath.Join(overlayScratch, strconv.Itoa(i), "work")
		for _, d := range []string{upper, work, o.Target} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return fmt.Errorf("overlay: %w", err)
			}
		}
		if err := os.Chown(upper, job.UID, job.GID); err != nil {
			return fmt.Errorf("overlay: %w", err)
		}
		opts := "lowerdir=" + o.Lower + ",upperdir=" + upper + ",workdir=" + work
		if err := unix.Mount("overlay", o.Target, "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
			return fmt.Errorf("overlay %s on %s: %w", o.Lower, o.Target, err)
		}
		if err := writeFilesIn(o.Target, o.Files, job.UID, job.GID); err != nil {
			return fmt.Errorf("overlay %s: %w", o.Target, err)
		}
	}
	return nil
}

// writeFilesIn writes files under dir, owned by uid and gid, replacing any
// file already at their paths (in an overlay, the lower layer's may be
// there, read-only).
func writeFilesIn(dir string, files []wire.File, uid, gid int) error {
	for _, f := range files {
		if err := wire.CheckPath(f.Path); err != nil {
			return err
		}
		mode := os.FileMode(f.Mode)
		if mode == 0 {
			mode = 0o644
		}
		if err := writeFileBeneath(dir, f.Path, f.Content, mode, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// writeFileBeneath writes rel (a checked, slash-separated path) under dir,
// creating missing directories, all owned by uid and gid. It never follows
// a symlink: in a session the work dir holds what earlier programs left,
// and this init runs as root, so a link planted there must not steer its
// writes elsewhere. Each component is opened relative to its parent's
// descriptor, so nothing can be swapped in between the checks and the
// writes either.
func writeFileBeneath(dir, rel string, content []byte, mode os.FileMode, uid, gid int) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", dir, err)
	}
	parts := strings.Split(rel, "/")
	for _, name := range parts[:len(parts)-1] {
		err := unix.Mkdirat(fd, name, 0o755)
		created := err == nil
		if err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			return fmt.Errorf("mkdir %s: %w", rel, err)
		}
		next, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("open %s: %w", rel, err)
		}
		fd = next
		if created {
			if err := unix.Fchown(fd, uid, gid); err != nil {
				unix.Close(fd)
				return fmt.Errorf("chown %s: %w", rel, err)
			}
		}
	}
	defer unix.Close(fd)
	name := parts[len(parts)-1]
	// Unlink first, so the new file is ours whatever was there: a
	// read-only file of an overlay's lower layer, a link, a fifo.
	if err := unix.Unlinkat(fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("replace %s: %w", rel, err)
	}
	ffd, err := unix.Openat(fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(mode.Perm()))
	if err != nil {
		return fmt.Errorf("create %s: %w", rel, err)
	}
	f := os.NewFile(uintptr(ffd), rel)
	defer f.Close()
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	// Chmod after creating: the umask must not narrow the requested mode.
	if err := f.Chmod(mode.Perm()); err != nil {
		return fmt.Errorf("chmod %s: %w", rel, err)
	}
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", rel, err)
	}
	return nil
}

// plainAbs accepts an absolute path in its clean form: no "..", no "//".
func plainAbs(p string) bool {
	return filepath.IsAbs(p) && filepath.Clean(p) == p
}

// fileChunk is the content carried by one FrameFileData frame.
const fileChunk = 256 << 10

// sendFiles sends the files a step collects, each as a FrameFile header and
// its content in chunks. A file that cannot be sent (missing, not a regular
// file, too large) is reported in its header; only a broken stream to the
// host is an error.
func sendFiles(step wire.Step, out *frameWriter) error {
	for _, name := range step.Collect {
		f, hdr := openCollected(step, name)
		b, err := json.Marshal(hdr)
		if err != nil {
			if f != nil {
				f.Close()
			}
			return fmt.Errorf("send file: %w", err)
		}
		if err := out.write(wire.FrameFile, b); err != nil {
			if f != nil {
				f.Close()
			}
			return fmt.Errorf("send file: %w", err)
		}
		if f == nil {
			continue
		}
		err = sendContent(f, hdr.Size, out)
		f.Close()
		if err != nil {
			return fmt.Errorf("send file %s: %w", name, err)
		}
	}
	return nil
}

// openCollected opens a collected file for reading, or says in the header
// why it cannot be sent. The init reads as root, so it refuses anything
// but a regular file directly in the step's directory: no symlink can lead
// it elsewhere.
func openCollected(step wire.Step, name string) (*os.File, wire.FileHeader) {
	hdr := wire.FileHeader{Name: name}
	if err := wire.CheckPath(name); err != nil || strings.Contains(name, "/") {
		hdr.Error = "not a file name of the work directory"
		return nil, hdr
	}
	fd, err := unix.Open(filepath.Join(step.Dir, name), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		hdr.Error = "not found"
		if !errors.Is(err, unix.ENOENT) {
			hdr.Error = "cannot be opened: " + err.Error()
		}
		return nil, hdr
	}
	f := os.NewFile(uintptr(fd), name)
	info, err := f.Stat()
	switch {
	case err != nil:
		hdr.Error = "cannot be read: " + err.Error()
	case !info.Mode().IsRegular():
		hdr.Error = "not a regular file"
	case step.CollectMaxBytes > 0 && info.Size() > step.CollectMaxBytes:
		hdr.Error = fmt.Sprintf("%d bytes: larger than the limit of %d bytes", info.Size(), step.CollectMaxBytes)
	default:
		hdr.Size = info.Size()
		return f, hdr
	}
	f.Close()
	return nil, hdr
}

// sendContent sends exactly size bytes of f: the size the header announced,
// whatever happens to the file meanwhile (nothing should, the step is over).
func sendContent(f *os.File, size int64, out *frameWriter) error {
	buf := make([]byte, min(size, fileChunk))
	for size > 0 {
		chunk := buf[:min(size, int64(len(buf)))]
		if n, err := io.ReadFull(f, chunk); err != nil {
			// Shrunk under us: pad, so the host's count stays right.
			clear(chunk[n:])
		}
		if err := out.write(wire.FrameFileData, chunk); err != nil {
			return err
		}
		size -= int64(len(chunk))
	}
	return nil
}

// limitASFlag makes the init a wrapper that lowers RLIMIT_AS and execs a
// program: `init --limit-as BYTES -- argv...`. The init cannot lower its
// own address-space limit around a fork the way it does the others (a Go
// runtime that cannot map memory dies), so a step with an address-space
// limit starts through this wrapper, which costs one exec.
const limitASFlag = "--limit-as"

// withAddressSpace returns argv run through the wrapper when the step has
// an address-space limit.
func withAddressSpace(argv []string, lim wire.Limits) ([]string, error) {
	if lim.AddressSpaceBytes <= 0 || len(argv) == 0 {
		return argv, nil
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("address-space limit: %w", err)
	}
	return append([]string{self, limitASFlag, strconv.FormatInt(lim.AddressSpaceBytes, 10), "--"}, argv...), nil
}

// execLimitedAS is the wrapper's side: set the limit, become the program.
// Everything exec needs is allocated before the limit is set: the Go
// runtime reserves far more address space than it uses, and an allocation
// that needs a new mapping under the limit kills it (it did, now and then,
// for g++).
func execLimitedAS(limit string, argv []string) int {
	n, err := strconv.ParseUint(limit, 10, 64)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox init: %s %q: %v\n", limitASFlag, limit, err)
		return 126
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		if path, err = exec.LookPath(path); err != nil {
			fmt.Fprintf(os.Stderr, "%s: command not found\n", argv[0])
			return 127
		}
	}
	pathp, err := syscall.BytePtrFromString(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", argv[0], err)
		return 127
	}
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", argv[0], err)
		return 127
	}
	envp, err := syscall.SlicePtrFromStrings(os.Environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", argv[0], err)
		return 127
	}
	lim := unix.Rlimit{Cur: n, Max: n}
	if _, _, errno := syscall.RawSyscall6(unix.SYS_PRLIMIT64, 0, unix.RLIMIT_AS, uintptr(unsafe.Pointer(&lim)), 0, 0, 0); errno != 0 {
		fmt.Fprintf(os.Stderr, "sandbox init: setrlimit AS: %v\n", errno)
		return 126
	}
	_, _, errno := syscall.RawSyscall(unix.SYS_EXECVE, uintptr(unsafe.Pointer(pathp)),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envp[0])))
	fmt.Fprintf(os.Stderr, "%s: %v\n", argv[0], errno)
	return 127
}
