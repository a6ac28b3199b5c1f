package execreq

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Unzip turns additional_files, a base64 ZIP, into files for the work dir.
// Nothing in the archive is trusted: names are checked to stay inside the
// work dir and to be names the sandbox can create, only regular files and
// directories are accepted, and the decompressed size is counted while
// reading, so a header that understates it (a zip bomb) is caught by the
// bytes themselves.
//
// taken are paths the work dir holds beside the archive's files: the
// source file the request's code is written to. No entry may be one of
// them, make one a directory, or need one as its directory ("main.py/x").
func Unzip(b64 string, taken ...string) ([]executor.File, error) {
	raw, err := DecodeBase64(b64, "additional_files")
	if err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return nil, apierror.New(apierror.InvalidZip, "additional_files is not a ZIP archive: %v", err)
	}
	if len(zr.File) > MaxZipEntries {
		return nil, apierror.New(apierror.TooManyFiles, "additional_files has %d entries; the limit is %d", len(zr.File), MaxZipEntries)
	}

	var (
		files []executor.File
		total int64
		tree  = newWorkTree(taken)
	)
	for _, f := range zr.File {
		name, err := entryPath(f.Name)
		if err != nil {
			return nil, err
		}
		mode := f.Mode()
		switch {
		case mode.IsDir() && name == ".":
			continue // "./": the work dir exists already
		case mode.IsDir():
			if err := tree.claim(name, true); err != nil {
				return nil, err
			}
			continue
		case mode&fs.ModeSymlink != 0:
			return nil, apierror.New(apierror.UnsupportedEntry, "additional_files entry %q is a symbolic link; only regular files and directories are accepted", name)
		case !mode.IsRegular():
			return nil, apierror.New(apierror.UnsupportedEntry, "additional_files entry %q is not a regular file (%s)", name, mode.Type())
		}
		if err := tree.claim(name, false); err != nil {
			return nil, err
		}

		data, err := readEntry(f, MaxFilesBytes-total)
		if err != nil {
			return nil, err
		}
		total += int64(len(data))
		perm := uint32(0o644)
		if mode.Perm()&0o111 != 0 {
			perm = 0o755
		}
		files = append(files, executor.File{Path: name, Content: data, Mode: perm})
	}
	return files, nil
}

// workTree is every path an archive's entries have taken, as a file or as
// a directory, so that no path is both: the sandbox could write one and
// then fail on the other, after the caller was charged for the run.
type workTree struct {
	isFile, isDir map[string]bool
	// taken are the files that were there before the archive.
	taken map[string]bool
}

func newWorkTree(taken []string) *workTree {
	t := &workTree{isFile: map[string]bool{}, isDir: map[string]bool{}, taken: map[string]bool{}}
	for _, p := range taken {
		if p == "" {
			continue
		}
		t.taken[p] = true
		t.isFile[p] = true
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			t.isDir[dir] = true
		}
	}
	return t
}

// claim takes name, a cleaned path, as a directory or as a file.
func (t *workTree) claim(name string, dir bool) error {
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		if t.isFile[d] {
			return t.conflict(d, name, false)
		}
	}
	switch {
	case t.isFile[name]:
		return t.conflict(name, name, !dir)
	case !dir && t.isDir[name]:
		return t.conflict(name, name, false)
	}
	for d := path.Dir(name); d != "."; d = path.Dir(d) {
		t.isDir[d] = true
	}
	if dir {
		t.isDir[name] = true
	} else {
		t.isFile[name] = true
	}
	return nil
}

// conflict is the refusal of entry, which needs p as something it
// already is: a second file of the same name (twice), or a file where a
// directory is wanted or the other way round.
func (t *workTree) conflict(p, entry string, twice bool) error {
	switch {
	case t.taken[p]:
		return apierror.New(apierror.FileConflict,
			"additional_files entry %q collides with %s, where the code is written; send the program either as code or in the ZIP", entry, p)
	case twice:
		return apierror.New(apierror.FileConflict, "additional_files has %q twice", p)
	default:
		return apierror.New(apierror.FileConflict, "additional_files has %q both as a file and as a directory", p)
	}
}

// readEntry decompresses one entry, refusing to produce more than room
// bytes.
func readEntry(f *zip.File, room int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, apierror.New(apierror.InvalidZip, "additional_files entry %q cannot be read: %v", f.Name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(io.LimitReader(rc, room+1))
	if int64(len(data)) > room {
		return nil, apierror.New(apierror.FilesTooLarge, "additional_files decompresses to more than %d bytes (10 MB)", MaxFilesBytes)
	}
	if err != nil {
		return nil, apierror.New(apierror.InvalidZip, "additional_files entry %q is corrupt: %v", f.Name, err)
	}
	return data, nil
}

// entryPath checks that a ZIP entry name stays inside the work dir and
// returns it cleaned, without a trailing slash ("." for a "./" directory).
func entryPath(name string) (string, error) {
	unsafe := func(why string) error {
		return apierror.New(apierror.UnsafePath, "additional_files entry %q: %s", name, why)
	}
	switch {
	case name == "":
		return "", unsafe("empty name")
	case len(name) > MaxPathBytes:
		return "", apierror.New(apierror.UnsafePath, "an additional_files entry name is %d bytes; the limit is %d", len(name), MaxPathBytes)
	case strings.ContainsRune(name, 0):
		return "", unsafe("NUL in name")
	case strings.ContainsRune(name, '\\'):
		// Windows tools write backslashes; on Linux they would be part of
		// a file name, so "..\\x" must not be waved through.
		return "", unsafe("backslashes are not path separators in a ZIP; use '/'")
	case strings.HasPrefix(name, "/"):
		return "", unsafe("absolute paths are not allowed")
	case len(name) >= 2 && name[1] == ':' && isLetter(name[0]):
		return "", unsafe("drive-letter paths are not allowed")
	}
	for _, elem := range strings.Split(strings.TrimSuffix(name, "/"), "/") {
		if elem == ".." {
			return "", unsafe("'..' would leave the work dir")
		}
	}
	clean := path.Clean(name)
	if clean == "." && !strings.HasSuffix(name, "/") {
		return "", unsafe("names the work dir itself")
	}
	if clean != "." {
		what := "additional_files entry"
		if strings.Contains(clean, "/") {
			what += " " + quoteShort(name) + ", in its path"
		}
		for _, elem := range strings.Split(clean, "/") {
			if err := CheckName(elem, what); err != nil {
				return "", err
			}
		}
	}
	return clean, nil
}

// CheckName refuses what the sandbox cannot create as one name in a
// directory: over MaxNameBytes (counted in bytes, as the kernel counts),
// not UTF-8 (the request reaches the sandbox as JSON, which would replace
// such bytes and so write, or collide with, another name), empty, ".",
// "..", or holding '/' or NUL. what says where the name is, for the
// message ("input_files[2].filename").
func CheckName(name, what string) error {
	unsafe := func(why string, args ...any) error {
		return apierror.New(apierror.UnsafePath, "%s %s: %s", what, quoteShort(name), fmt.Sprintf(why, args...))
	}
	switch {
	case len(name) > MaxNameBytes:
		return unsafe("%d bytes; a file or directory name may be at most %d bytes (Linux refuses %d and more)",
			len(name), MaxNameBytes, MaxNameBytes+1)
	case !utf8.ValidString(name):
		return unsafe("not UTF-8; file names must be UTF-8 text")
	case name == "":
		return unsafe("empty name")
	case name == ".":
		return unsafe("names the work dir itself")
	case name == "..":
		return unsafe("'..' would leave the work dir")
	case strings.ContainsRune(name, '/'):
		return unsafe("path separators are not allowed in a name")
	case strings.ContainsRune(name, 0):
		return unsafe("NUL is not allowed")
	}
	return nil
}

// quoteShort quotes s for a message, cut short when it is long: a name of
// hundreds of bytes would drown the reason it is refused.
func quoteShort(s string) string {
	if len(s) <= 48 {
		return strconv.Quote(s)
	}
	return fmt.Sprintf("%.40q…", s)
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
