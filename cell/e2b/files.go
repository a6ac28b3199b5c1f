package e2b

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/sandboxapi/sandboxapi/cell/api"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
	"github.com/sandboxapi/sandboxapi/cell/callerauth"
	"github.com/sandboxapi/sandboxapi/cell/sessions"
	"github.com/sandboxapi/sandboxapi/sandboxes/executor"
)

// A session sandbox has no file API of its own: the door reads, writes
// and lists files with small shell scripts run as the sandbox's user, as
// processes of the session (sessions.Handle.Start) that need not wait for
// a running cell or command, so what a file operation may touch is what
// the user's own commands may, and no more.

// MaxFileBytes bounds a file read or written through envd's /files.
const MaxFileBytes = 16 << 20

// fileOpLimits bound one file operation's script.
var fileOpLimits = executor.Limits{CPU: 30 * time.Second, Wall: 30 * time.Second, OutputBytes: MaxFileBytes + 1}

// Exit codes the scripts use to say what went wrong.
const (
	exitNotFound = 44
	exitIsDir    = 45
	exitNotDir   = 46
	exitExists   = 47
)

// errFS is a file operation that failed as the client's mistake; kind
// says which (exitNotFound...), message what.
type errFS struct {
	kind    int
	message string
}

func (e *errFS) Error() string { return e.message }

// script runs a /bin/sh script in the sandbox with args as $1...
func script(ctx context.Context, sb sessions.Handle, lim executor.Limits, src string, args ...string) (*executor.Result, error) {
	argv := append([]string{"/bin/sh", "-c", src, "e2b"}, args...)
	p, err := sb.Start(ctx, executor.ProcessSpec{Argv: argv, Limits: lim}, false)
	if err != nil {
		return nil, err
	}
	res, err := p.Wait(ctx)
	if err != nil {
		if ctx.Err() != nil {
			// The client left: so does its file operation.
			_ = p.Signal(context.WithoutCancel(ctx), 9)
		}
		return nil, err
	}
	switch {
	case res.End == executor.EndOutputLimit:
		return nil, apierror.New(apierror.PayloadTooLarge, "the file is larger than %d bytes, the most envd's /files reads here; read it in parts with a command", MaxFileBytes)
	case res.End != executor.EndExited:
		return nil, fmt.Errorf("e2b: file operation ended %s: %s", res.End, res.Message)
	case res.ExitCode == exitNotFound, res.ExitCode == exitIsDir, res.ExitCode == exitNotDir, res.ExitCode == exitExists:
		return nil, &errFS{kind: res.ExitCode, message: strings.TrimSpace(string(res.Stderr))}
	case res.ExitCode != 0:
		return nil, &errFS{message: strings.TrimSpace(string(res.Stderr))}
	}
	return res, nil
}

// resolve makes p absolute: relative to the user's home, as envd does,
// with "~" for the home itself.
func resolve(p string) (string, error) {
	switch {
	case strings.ContainsRune(p, 0):
		return "", apierror.New(apierror.InvalidField, "path contains a NUL byte")
	case p == "~":
		p = Home
	case strings.HasPrefix(p, "~/"):
		p = Home + p[1:]
	case !strings.HasPrefix(p, "/"):
		p = Home + "/" + p
	}
	return path.Clean(p), nil
}

// checkUser refuses a user other than the sandbox's own: every command
// and file operation runs as it (there is no root in a sandbox here).
func checkUser(name string) error {
	if name != "" && name != User {
		return apierror.New(apierror.InvalidField, "user %q: a sandbox here has one user, %q, which every command and file operation runs as (docs/e2b.md)", name, User)
	}
	return nil
}

// basicUser is the user E2B's SDK names in "Authorization: Basic
// base64(user:)" on envd requests; "" when it names none.
func basicUser(h http.Header) string {
	scheme, token, _ := strings.Cut(h.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(token))
	if err != nil {
		return ""
	}
	user, _, _ := strings.Cut(string(raw), ":")
	return user
}

const readScript = `p=$1
if [ -d "$p" ]; then echo "path is a directory: $p" >&2; exit 45; fi
if [ ! -e "$p" ]; then echo "file not found: $p" >&2; exit 44; fi
exec cat -- "$p"`

// readFile serves envd's GET /files?path=&username=: the file's bytes.
func (s *Server) readFile(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	q := r.URL.Query()
	if err := checkUser(cmp.Or(q.Get("username"), basicUser(r.Header))); err != nil {
		s.envdFail(w, err)
		return
	}
	p, err := resolve(q.Get("path"))
	if err != nil {
		s.envdFail(w, err)
		return
	}
	res, err := script(r.Context(), sb, fileOpLimits, readScript, p)
	if err != nil {
		s.envdFail(w, err)
		return
	}
	if res.StdoutTruncated || len(res.Stdout) > MaxFileBytes {
		s.envdFail(w, apierror.New(apierror.PayloadTooLarge, "%s is larger than %d bytes, the most /files reads; read it in parts with a command", p, MaxFileBytes))
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(p)}))
	w.Header().Set("Content-Length", strconv.Itoa(len(res.Stdout)))
	w.WriteHeader(http.StatusOK)
	w.Write(res.Stdout)
}

// WriteInfo is envd's answer for each file written.
type WriteInfo struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Path string `json:"path"`
}

// upload is one file of a POST /files.
type upload struct {
	path string
	data []byte
}

// writeFiles serves envd's POST /files?path=&username=: one file as the
// body (application/octet-stream), or each multipart part named "file"
// (its filename the path when the query names none).
func (s *Server) writeFiles(w http.ResponseWriter, r *http.Request, _ callerauth.Caller, sb sessions.Handle) {
	q := r.URL.Query()
	if err := checkUser(cmp.Or(q.Get("username"), basicUser(r.Header))); err != nil {
		s.envdFail(w, err)
		return
	}
	files, err := readUploads(w, r, q.Get("path"))
	if err != nil {
		s.envdFail(w, err)
		return
	}
	out := make([]WriteInfo, 0, len(files))
	for _, f := range files {
		p, err := resolve(f.path)
		if err != nil {
			s.envdFail(w, err)
			return
		}
		if err := writeFile(r.Context(), sb, p, f.data); err != nil {
			s.envdFail(w, err)
			return
		}
		out = append(out, WriteInfo{Name: path.Base(p), Type: "file", Path: p})
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// readUploads reads a POST /files body.
func readUploads(w http.ResponseWriter, r *http.Request, queryPath string) ([]upload, error) {
	if r.Header.Get("Content-Encoding") != "" && r.Header.Get("Content-Encoding") != "identity" {
		return nil, apierror.New(apierror.InvalidField, "Content-Encoding %q is not supported; send the file uncompressed", r.Header.Get("Content-Encoding"))
	}
	body := http.MaxBytesReader(w, r.Body, MaxFileBytes+1<<20)
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		if queryPath == "" {
			return nil, apierror.New(apierror.MissingField, "path is required for an application/octet-stream upload")
		}
		data, err := io.ReadAll(body)
		if err != nil {
			return nil, tooLarge(err)
		}
		return []upload{{path: queryPath, data: data}}, nil
	}
	mr := multipart.NewReader(body, params["boundary"])
	var out []upload
	total := 0
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if e := tooLarge(err); apierror.Is(e, apierror.PayloadTooLarge) {
				return nil, e
			}
			return nil, apierror.New(apierror.InvalidField, "the multipart body is malformed: %v", err)
		}
		if part.FormName() != "file" {
			continue
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, tooLarge(err)
		}
		total += len(data)
		if total > MaxFileBytes {
			return nil, apierror.New(apierror.PayloadTooLarge, "an upload may carry at most %d bytes", MaxFileBytes)
		}
		p := queryPath
		if p == "" || len(out) > 0 {
			p = partPath(part)
		}
		if p == "" {
			return nil, apierror.New(apierror.MissingField, "each file part needs a path: the query's path, or the part's filename")
		}
		out = append(out, upload{path: p, data: data})
	}
	if len(out) == 0 {
		return nil, apierror.New(apierror.MissingField, "the multipart body has no part named \"file\"")
	}
	return out, nil
}

// tooLarge is a failed read of an upload: too large, or cut short or
// malformed (the client's body, not ours).
// partPath is a part's filename as the client sent it: the SDK puts the
// file's path there, which Part.FileName would cut to its base name.
func partPath(part *multipart.Part) string {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

func tooLarge(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apierror.New(apierror.PayloadTooLarge, "an upload may carry at most %d bytes", MaxFileBytes)
	}
	return apierror.New(apierror.InvalidField, "the upload could not be read: %v", err)
}

// chunkBytes is how much of a file one argument carries, as base64: well
// under Linux's 128 KiB for one argument; chunksPerScript keep a script's
// arguments under the 2 MiB of them all.
const (
	chunkBytes      = 48 << 10
	chunksPerScript = 16
)

// writeScript writes $1 from the base64 chunks after it: truncated first
// when $2 is "new", appended to otherwise, its directory made.
const writeScript = `p=$1; mode=$2; shift 2
if [ -d "$p" ]; then echo "path is a directory: $p" >&2; exit 45; fi
if [ "$mode" = new ]; then mkdir -p -- "$(dirname -- "$p")" && : > "$p" || exit 1; fi
for c in "$@"; do printf '%s' "$c" | base64 -d >> "$p" || exit 1; done`

// writeFile writes data to p, making its directory, in as many scripts
// as its size takes.
func writeFile(ctx context.Context, sb sessions.Handle, p string, data []byte) error {
	mode := "new"
	for first := true; first || len(data) > 0; first = false {
		args := []string{p, mode}
		for range chunksPerScript {
			if len(data) == 0 {
				break
			}
			n := min(chunkBytes, len(data))
			args = append(args, base64.StdEncoding.EncodeToString(data[:n]))
			data = data[n:]
		}
		if _, err := script(ctx, sb, fileOpLimits, writeScript, args...); err != nil {
			return err
		}
		mode = "append"
	}
	return nil
}

// envdFail answers an envd REST request that failed, in envd's shape.
func (s *Server) envdFail(w http.ResponseWriter, err error) {
	var fe *errFS
	switch {
	case errors.As(err, &fe) && fe.kind == exitNotFound:
		api.WriteJSON(w, http.StatusNotFound, ErrorBody{Code: http.StatusNotFound, Message: fe.message, Error: apierror.NotFound})
	case errors.As(err, &fe):
		api.WriteJSON(w, http.StatusBadRequest, ErrorBody{Code: http.StatusBadRequest, Message: fe.message, Error: apierror.InvalidField})
	case errors.Is(err, sessions.ErrEnded):
		writeEnvdError(w, apierror.New(apierror.SessionNotFound, "the sandbox ended"))
	case sessions.SandboxDown(err):
		writeEnvdError(w, apierror.New(apierror.SandboxUnavailable, "the sandbox stopped and a new one could not be started; retry shortly"))
	case apierror.Gone(err):
	default:
		writeEnvdError(w, apierror.Public(err, s.Logger))
	}
}
