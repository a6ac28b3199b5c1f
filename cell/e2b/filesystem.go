package e2b

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/filesystem"
	"github.com/sandboxapi/sandboxapi/cell/e2b/envd/filesystem/filesystemconnect"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
)

// filesystemService is envd's filesystem.Filesystem, for the sandbox of
// the request (held in its context by rpc).
type filesystemService struct {
	s *Server
}

var _ filesystemconnect.FilesystemHandler = (*filesystemService)(nil)

// entryFormat is find's -printf for one entry: type, size, permission
// bits, ls-style permissions, owner, group, mtime, symlink target, path,
// each ended by NUL (no file name holds one).
const entryFormat = `%y\0%s\0%m\0%M\0%u\0%g\0%T@\0%l\0%p\0`

const entryFields = 9

// MaxListDepth bounds ListDir's depth.
const MaxListDepth = 16

// MaxListEntries bounds the entries one ListDir returns.
const MaxListEntries = 10000

// parseEntries reads find's output in entryFormat.
func parseEntries(out []byte) ([]*filesystem.EntryInfo, error) {
	fields := strings.Split(string(out), "\x00")
	if len(fields) > 0 && fields[len(fields)-1] == "" {
		fields = fields[:len(fields)-1]
	}
	if len(fields)%entryFields != 0 {
		return nil, errors.New("e2b: find's output is not whole entries")
	}
	var entries []*filesystem.EntryInfo
	for i := 0; i < len(fields); i += entryFields {
		f := fields[i : i+entryFields]
		size, _ := strconv.ParseInt(f[1], 10, 64)
		perm, _ := strconv.ParseUint(f[2], 8, 32)
		secs, _ := strconv.ParseFloat(f[6], 64)
		mode := fs.FileMode(perm)
		e := &filesystem.EntryInfo{Name: path.Base(f[8]), Path: f[8], Size: size, Permissions: f[3], Owner: f[4], Group: f[5],
			ModifiedTime: timestamppb.New(time.Unix(0, int64(secs*1e9)))}
		switch f[0] {
		case "d":
			e.Type, mode = filesystem.FileType_FILE_TYPE_DIRECTORY, mode|fs.ModeDir
		case "l":
			target := f[7]
			e.Type, mode, e.SymlinkTarget = filesystem.FileType_FILE_TYPE_SYMLINK, mode|fs.ModeSymlink, &target
		default:
			e.Type = filesystem.FileType_FILE_TYPE_FILE
		}
		e.Mode = uint32(mode)
		entries = append(entries, e)
	}
	return entries, nil
}

const statScript = `if [ ! -e "$1" ] && [ ! -L "$1" ]; then echo "no such file or directory: $1" >&2; exit 44; fi
exec find "$1" -maxdepth 0 -printf "$2"`

// oneEntry runs a script in the request's sandbox that prints one
// entry in entryFormat, and returns it.
func oneEntry(ctx context.Context, src string, args ...string) (*filesystem.EntryInfo, error) {
	res, err := script(ctx, heldFrom(ctx).sb, fileOpLimits, src, args...)
	if err != nil {
		return nil, err
	}
	entries, err := parseEntries(res.Stdout)
	if err != nil || len(entries) != 1 {
		return nil, errors.Join(fmt.Errorf("e2b: %d entries where one was due", len(entries)), err)
	}
	return entries[0], nil
}

// rpcPath resolves an RPC's path and checks its caller's user.
func (s *Server) rpcPath(req connect.AnyRequest, p string) (string, error) {
	if err := checkUser(basicUser(req.Header())); err != nil {
		return "", s.rpcError(err)
	}
	if p == "" {
		return "", connect.NewError(connect.CodeInvalidArgument, errors.New("path is required"))
	}
	abs, err := resolve(p)
	if err != nil {
		return "", s.rpcError(err)
	}
	return abs, nil
}

// Stat is one path's entry.
func (f *filesystemService) Stat(ctx context.Context, req *connect.Request[filesystem.StatRequest]) (*connect.Response[filesystem.StatResponse], error) {
	p, err := f.s.rpcPath(req, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	e, err := oneEntry(ctx, statScript, p, entryFormat)
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.StatResponse{Entry: e}), nil
}

const listScript = `if [ ! -e "$1" ]; then echo "no such directory: $1" >&2; exit 44; fi
if [ ! -d "$1" ]; then echo "not a directory: $1" >&2; exit 46; fi
find "$1" -mindepth 1 -maxdepth "$2" -printf "$3" | head -z -n "$4"`

// ListDir lists a directory, depth levels down (1: its entries).
func (f *filesystemService) ListDir(ctx context.Context, req *connect.Request[filesystem.ListDirRequest]) (*connect.Response[filesystem.ListDirResponse], error) {
	p, err := f.s.rpcPath(req, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	depth := max(req.Msg.GetDepth(), 1)
	if depth > MaxListDepth {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("depth may be at most "+strconv.Itoa(MaxListDepth)))
	}
	res, err := script(ctx, heldFrom(ctx).sb, fileOpLimits, listScript, p, strconv.Itoa(int(depth)), entryFormat, strconv.Itoa(MaxListEntries*entryFields))
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	entries, err := parseEntries(res.Stdout)
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.ListDirResponse{Entries: entries}), nil
}

const makeDirScript = `if [ -e "$1" ]; then echo "already exists: $1" >&2; exit 47; fi
mkdir -p -- "$1" || exit 1
exec find "$1" -maxdepth 0 -printf "$2"`

// MakeDir makes a directory and its parents; one that exists is
// AlreadyExists, which the SDK's makeDir answers false.
func (f *filesystemService) MakeDir(ctx context.Context, req *connect.Request[filesystem.MakeDirRequest]) (*connect.Response[filesystem.MakeDirResponse], error) {
	p, err := f.s.rpcPath(req, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	e, err := oneEntry(ctx, makeDirScript, p, entryFormat)
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.MakeDirResponse{Entry: e}), nil
}

const moveScript = `if [ ! -e "$1" ] && [ ! -L "$1" ]; then echo "no such file or directory: $1" >&2; exit 44; fi
mkdir -p -- "$(dirname -- "$2")" && mv -T -- "$1" "$2" || exit 1
exec find "$2" -maxdepth 0 -printf "$3"`

// Move renames source to destination.
func (f *filesystemService) Move(ctx context.Context, req *connect.Request[filesystem.MoveRequest]) (*connect.Response[filesystem.MoveResponse], error) {
	src, err := f.s.rpcPath(req, req.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	dst, err := f.s.rpcPath(req, req.Msg.GetDestination())
	if err != nil {
		return nil, err
	}
	e, err := oneEntry(ctx, moveScript, src, dst, entryFormat)
	if err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.MoveResponse{Entry: e}), nil
}

const removeScript = `if [ ! -e "$1" ] && [ ! -L "$1" ]; then echo "no such file or directory: $1" >&2; exit 44; fi
exec rm -rf -- "$1"`

// Remove removes a file or a directory with what it holds.
func (f *filesystemService) Remove(ctx context.Context, req *connect.Request[filesystem.RemoveRequest]) (*connect.Response[filesystem.RemoveResponse], error) {
	p, err := f.s.rpcPath(req, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if _, err := script(ctx, heldFrom(ctx).sb, fileOpLimits, removeScript, p); err != nil {
		return nil, f.s.rpcError(err)
	}
	return connect.NewResponse(&filesystem.RemoveResponse{}), nil
}

// rpcError is err as a Connect error the SDK maps to its own: a missing
// path NotFound, a sandbox that ended Unavailable (its "sandbox was not
// found"), a refusal InvalidArgument, anything else Internal.
func (s *Server) rpcError(err error) error {
	var fe *errFS
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce
	case errors.As(err, &fe) && fe.kind == exitNotFound:
		return connect.NewError(connect.CodeNotFound, errors.New(fe.message))
	case errors.As(err, &fe) && fe.kind == exitExists:
		return connect.NewError(connect.CodeAlreadyExists, errors.New(fe.message))
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, errors.New(fe.message))
	case errors.Is(err, sessions.ErrEnded):
		return connect.NewError(connect.CodeUnavailable, errors.New("the sandbox was not found: it was killed or reached its timeout"))
	case sessions.SandboxDown(err):
		return connect.NewError(connect.CodeUnavailable, errors.New("the sandbox stopped and a new one could not be started; retry shortly"))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeCanceled, err)
	}
	if e, ok := apierror.As(err); ok {
		code := connect.CodeInvalidArgument
		switch {
		case e.Status() == 413:
			code = connect.CodeResourceExhausted
		case e.Status() >= 500:
			code = connect.CodeUnavailable
		}
		return connect.NewError(code, errors.New(e.Message))
	}
	s.Logger.Error("e2b: envd call failed", "err", err)
	return connect.NewError(connect.CodeInternal, errors.New("the operation failed inside SandboxAPI; retry, and report it if it persists"))
}
