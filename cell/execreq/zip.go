package execreq

import (
	"archive/zip"
	"bytes"
	"io"
	"io/fs"
	"path"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// Unzip turns additional_files, a base64 ZIP, into files for the work dir.
// Nothing in the archive is trusted: names are checked to stay inside the
// work dir, only regular files and directories are accepted, and the
// decompressed size is counted while reading, so a header that understates
// it (a zip bomb) is caught by the bytes themselves.
func Unzip(b64 string) ([]executor.File, error) {
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
		// Every path taken, as a file or as a directory, so that "a" the
		// file and "a/b" cannot both be written.
		isFile = map[string]bool{}
		isDir  = map[string]bool{}
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
			if isFile[name] {
				return nil, apierror.New(apierror.FileConflict, "additional_files has %q both as a file and as a directory", name)
			}
			isDir[name] = true
			continue
		case mode&fs.ModeSymlink != 0:
			return nil, apierror.New(apierror.UnsupportedEntry, "additional_files entry %q is a symbolic link; only regular files and directories are accepted", name)
		case !mode.IsRegular():
			return nil, apierror.New(apierror.UnsupportedEntry, "additional_files entry %q is not a regular file (%s)", name, mode.Type())
		}
		if isFile[name] {
			return nil, apierror.New(apierror.FileConflict, "additional_files has %q twice", name)
		}
		if isDir[name] {
			return nil, apierror.New(apierror.FileConflict, "additional_files has %q both as a file and as a directory", name)
		}
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if isFile[dir] {
				return nil, apierror.New(apierror.FileConflict, "additional_files has %q both as a file and as a directory", dir)
			}
			isDir[dir] = true
		}
		isFile[name] = true

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
	return clean, nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
