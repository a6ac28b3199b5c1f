// Package wire is the protocol between the host and the init process that runs
// as PID 1 inside every sandbox.
//
// The host writes one Job as JSON to the init's stdin. The init answers on its
// stdout with a stream of frames: output chunks of the step that is running,
// then one result frame per step, then the files the step collects (a
// compiled program the caller asked for). A frame is a one-byte type, a four-byte
// big-endian payload length and the payload. The sandboxed program never writes
// to the init's stdout itself: its stdout and stderr are pipes the init reads,
// so nothing the program prints can forge a frame.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// FrameType says what a frame's payload is.
type FrameType byte

// Frame types.
const (
	FrameStdout FrameType = 'o' // a chunk of the running step's stdout
	FrameStderr FrameType = 'e' // a chunk of the running step's stderr
	FrameResult FrameType = 'r' // a StepResult as JSON: the step has ended
	FrameError  FrameType = 'x' // the init itself failed; payload is a message
	FrameDone   FrameType = 'd' // the job has ended; the sandbox is ready for the next
	// FrameFile starts a file a step collected (Step.Collect): a FileHeader
	// as JSON. The file's content follows in FrameFileData frames, Size
	// bytes in all.
	FrameFile FrameType = 'F'
	// FrameFileData is the next chunk of the file the last FrameFile began.
	FrameFileData FrameType = 'f'
	// FrameDisplay is one rich output of a Display step (a Display as
	// JSON), or the last chunk of one that FrameDisplayPart frames began:
	// one larger than MaxFramePayload.
	FrameDisplay FrameType = 'D'
	// FrameDisplayPart is a chunk of a rich output; the rest follows, up
	// to a FrameDisplay.
	FrameDisplayPart FrameType = 'p'
	// FrameProcess is news of one of a session's processes, or the answer
	// to an operation on one (Job.Process): a ProcessFrame, see
	// EncodeProcessFrame. These frames come at any time, between and
	// inside the frames of the job that runs, which they are not part of.
	FrameProcess FrameType = 'P'
)

// MaxFramePayload bounds one frame so a corrupt stream cannot make the host
// allocate without limit.
const MaxFramePayload = 1 << 20

// ErrFrameTooLarge is returned for a frame whose length exceeds MaxFramePayload.
var ErrFrameTooLarge = errors.New("wire: frame too large")

// ErrBadPath is returned for a file path that is absolute or leaves the
// work directory.
var ErrBadPath = errors.New("wire: file path must be relative and stay in the work directory")

// File is a file the init writes into the work directory before any step runs.
type File struct {
	Path    string `json:"path"` // relative to the work directory; see CheckPath
	Content []byte `json:"content"`
	Mode    uint32 `json:"mode,omitempty"` // permission bits; 0644 when zero
}

// CheckPath accepts a relative, slash-separated path that names a file
// inside the directory it is relative to: not absolute, no ".." element,
// not empty or ".". The host validates paths already; the init checks again
// because it writes as root.
func CheckPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("%w: %q", ErrBadPath, p)
		}
	}
	if c := path.Clean(p); c == "." {
		return fmt.Errorf("%w: %q", ErrBadPath, p)
	}
	return nil
}

// FileHeader starts a collected file on the wire.
type FileHeader struct {
	Name string `json:"name"` // as the step's Collect named it
	Size int64  `json:"size"` // bytes of FrameFileData that follow
	// Error says why the file is not sent (missing, too large, not a
	// regular file); Size is then 0.
	Error string `json:"error,omitempty"`
}

// Overlay makes Target a writable view of the read-only directory Lower
// for one execution: the init mounts an overlay whose upper layer lives in
// the execution's /tmp, so what the program writes there costs its own
// tmpfs and vanishes with it, while Lower is shared by every sandbox. It is
// how a toolchain's pre-built cache (Go's GOCACHE) is shared without
// copying it.
type Overlay struct {
	Lower  string `json:"lower"`
	Target string `json:"target"`
	// Files are written into the view (relative to Target), owned by the
	// job's user: per-execution state of the cache, such as the time Go
	// last trimmed it.
	Files []File `json:"files,omitempty"`
}

// Limits are what the init enforces on one step's processes.
type Limits struct {
	// CPUMillis is the CPU time of the step's processes together, the
	// ones that exited included, from the start (or the prestarted
	// runner's handover).
	CPUMillis  int64 `json:"cpu_ms"`
	WallMillis int64 `json:"wall_ms"` // wall-clock time from start to exit
	// Processes is RLIMIT_NPROC for the sandbox user: its processes and
	// threads in the sandbox, as gVisor counts them.
	Processes int `json:"processes"`
	// MemoryBytes bounds the resident memory of the step's processes
	// together (in a session, the session's): over it they are stopped.
	MemoryBytes   int64 `json:"memory_bytes,omitempty"`
	OpenFiles     int   `json:"open_files"`   // RLIMIT_NOFILE
	FileSizeBytes int64 `json:"file_size"`    // RLIMIT_FSIZE
	OutputBytes   int64 `json:"output_bytes"` // per stream; more kills the step
	StackBytes    int64 `json:"stack,omitempty"`
	// AddressSpaceBytes is RLIMIT_AS, for steps whose programs fail
	// cleanly (a compiler's "out of memory") rather than at the sandbox's
	// memory cgroup, which would end the whole sandbox.
	AddressSpaceBytes int64 `json:"address_space,omitempty"`
}

// Step is one program to run: a compile step, then the run step, say.
type Step struct {
	Name   string   `json:"name"`
	Argv   []string `json:"argv"`
	Env    []string `json:"env"`
	Dir    string   `json:"dir"`
	Stdin  []byte   `json:"stdin,omitempty"`
	Limits Limits   `json:"limits"`
	// MergeStderr sends the program's stderr into its stdout pipe.
	MergeStderr bool `json:"merge_stderr,omitempty"`
	// UsePrestarted runs the step in the execution's prestarted runner
	// (ServeConfig.Prestart) instead of starting Argv: Argv[1:] become the
	// program's arguments.
	UsePrestarted bool `json:"use_prestarted,omitempty"`
	// Repl runs Code in the session's interpreter (ServeConfig.Repl)
	// instead of starting Argv.
	Repl bool   `json:"repl,omitempty"`
	Code string `json:"code,omitempty"`
	// Context, with Repl, names the interpreter (Job.Context made it);
	// "" is the session's own.
	Context string `json:"context,omitempty"`
	// Display, with Repl, runs Code as a Jupyter cell: its rich outputs
	// come as FrameDisplay frames before the step's result, up to
	// DisplayBytes of them in all (the rest are dropped, and the result
	// says DisplayTruncated).
	Display      bool  `json:"display,omitempty"`
	DisplayBytes int64 `json:"display_bytes,omitempty"`
	// Collect names files (relative to Dir) the init sends back, as
	// FrameFile and FrameFileData frames after the step's result, when the
	// step exits 0: a compiled program the caller asked for.
	Collect []string `json:"collect,omitempty"`
	// CollectMaxBytes caps each collected file; a larger one is reported
	// with an error instead of its content.
	CollectMaxBytes int64 `json:"collect_max_bytes,omitempty"`
	// Optional lets the job go on to its next step when this one fails:
	// a build of something the caller asked for beside the run (the wasm
	// module), whose failure is the caller's to hear of, not the run's.
	Optional bool `json:"optional,omitempty"`
}

// ServeConfig is how a reusable sandbox's init prepares each execution
// before its job arrives: a fresh work dir and tmp of these sizes, and
// optionally a language runtime already started, waiting for its program.
type ServeConfig struct {
	UID       int     `json:"uid"`
	GID       int     `json:"gid"`
	WorkDir   string  `json:"work_dir"`
	WorkBytes int64   `json:"work_bytes"`
	TmpBytes  int64   `json:"tmp_bytes"`
	Prestart  *Runner `json:"prestart,omitempty"`
	// Zygote, with Prestart, is the argv of a program the init starts
	// once, as root, that forks each execution's prestarted runner into
	// the execution's namespaces (langs.Zygote; the guest's DESIGN.md,
	// "Zygotes"); the runner then goes on as Prestart's does.
	Zygote []string `json:"zygote,omitempty"`
	// Prepared is how many executions to keep prepared ahead (1 if zero).
	Prepared int `json:"prepared,omitempty"`
	// Repl, for a session's sandbox, is the driver that keeps the session's
	// interpreter alive between executions; ReplProtocol is how it wants
	// its messages ("json" or "nul", see package langs).
	Repl         *Runner `json:"repl,omitempty"`
	ReplProtocol string  `json:"repl_protocol,omitempty"`
	// StdinFile is where a "nul" driver reads an execution's stdin.
	StdinFile string `json:"stdin_file,omitempty"`
	// Network says the sandbox has a network (its link to the egress
	// proxy): executions keep the sandbox's network stack instead of
	// each getting a new, empty one.
	Network bool `json:"network,omitempty"`
}

// Runner is a language runtime started ahead of its program. It reads one
// control message on fd 3 (see EncodeGo), then runs the program.
type Runner struct {
	Argv   []string `json:"argv"`
	Env    []string `json:"env"`
	Limits Limits   `json:"limits"` // all but CPU apply from the start
	// Ready says the runner writes one byte on fd 3 (a socket) once it
	// waits for its program: the init hands the program over, and starts
	// the step's clocks, only then.
	Ready bool `json:"ready,omitempty"`
}

// Job is everything a one-shot execution needs. Steps run in order; a step
// that does not exit 0 ends the job.
type Job struct {
	WorkDir string `json:"work_dir"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
	Files   []File `json:"files,omitempty"`
	// Overlays are mounted before the files are written.
	Overlays []Overlay `json:"overlays,omitempty"`
	Steps    []Step    `json:"steps"`
	// StopBackground, for a session and with no steps, ends what the
	// session's programs left running: every process but the interpreter,
	// and the interpreter too if it used most of the CPU since the last
	// execution ended. The init answers with one StepResult: Stopped, and
	// StateLost if the interpreter was ended.
	StopBackground bool `json:"stop_background,omitempty"`
	// Context, for a session and with no steps, creates, restarts or
	// deletes one of its interpreters. The init answers one StepResult:
	// Started, or StartError saying why not.
	Context *ContextOp `json:"context,omitempty"`
	// Process, for a session and with no steps, is an operation on one of
	// its processes: programs that run beside its jobs and each other, with
	// stdin the host writes and signals it sends. The init does it at once,
	// even while a job runs, and answers with a FrameProcess of kind
	// ProcessAnswer, not with a FrameDone.
	Process *ProcessOp `json:"process,omitempty"`
}

// Process operations.
const (
	ProcessStart      = "start"
	ProcessInput      = "input"
	ProcessCloseStdin = "close_stdin"
	ProcessSignal     = "signal"
	ProcessResize     = "resize"
)

// TermSize is a terminal's size, in characters.
type TermSize struct {
	Cols uint16 `json:"cols"`
	Rows uint16 `json:"rows"`
}

// ProcessOp is an operation on one of a session's processes. The host
// numbers processes (ID) and operations (Seq); the answer names Seq.
type ProcessOp struct {
	Seq uint32 `json:"seq"`
	Op  string `json:"op"` // ProcessStart, ProcessInput, ProcessCloseStdin, ProcessSignal or ProcessResize
	ID  uint32 `json:"id"`
	// Step, for ProcessStart, is the program, run as a session's command
	// runs (in its group, under its memory limit and the step's rlimits,
	// wall-clock and output limits). Its CPU limit holds per process.
	Step *Step `json:"step,omitempty"`
	// Stdin, for ProcessStart, keeps the program's stdin open for
	// ProcessInput until ProcessCloseStdin; otherwise it reads Step.Stdin,
	// then end of file.
	Stdin bool `json:"stdin,omitempty"`
	// Data, for ProcessInput, is written to the program's stdin; the
	// answer comes once it has been.
	Data []byte `json:"data,omitempty"`
	// Signal, for ProcessSignal, is sent to the program's process group.
	Signal int `json:"signal,omitempty"`
	// Pty, for ProcessStart, runs the program on a terminal of this
	// size, as the leader of its own session: its stdin, stdout and
	// stderr are the terminal, its output comes as ProcessPty, and
	// ProcessInput is typed at it. For ProcessResize, the new size.
	Pty *TermSize `json:"pty,omitempty"`
}

// What a FrameProcess says.
const (
	ProcessStdout byte = 'o' // a chunk of process N's stdout
	ProcessStderr byte = 'e' // a chunk of process N's stderr
	ProcessPty    byte = 'p' // a chunk of what process N's terminal shows
	ProcessEnd    byte = 'r' // process N ended: a StepResult as JSON
	// ProcessAnswer answers operation N: empty data is done; otherwise
	// it says why not. A ProcessStart answered done is followed, in
	// time, by the process's ProcessEnd.
	ProcessAnswer byte = 'a'
)

// ErrBadProcessFrame is a FrameProcess payload too short to name its kind
// and number.
var ErrBadProcessFrame = errors.New("wire: bad process frame")

// EncodeProcessFrame is a FrameProcess payload: the kind, N as four bytes
// big-endian (a process id, or an operation's Seq for ProcessAnswer),
// then data.
func EncodeProcessFrame(kind byte, n uint32, data []byte) []byte {
	b := make([]byte, 5+len(data))
	b[0] = kind
	binary.BigEndian.PutUint32(b[1:5], n)
	copy(b[5:], data)
	return b
}

// DecodeProcessFrame splits a FrameProcess payload; data aliases p.
func DecodeProcessFrame(p []byte) (kind byte, n uint32, data []byte, err error) {
	if len(p) < 5 {
		return 0, 0, nil, fmt.Errorf("%w: %d bytes", ErrBadProcessFrame, len(p))
	}
	return p[0], binary.BigEndian.Uint32(p[1:5]), p[5:], nil
}

// MaxProcessChunk is the most output one FrameProcess carries, so that
// its kind and number fit within MaxFramePayload.
const MaxProcessChunk = MaxFramePayload - 5

// Context operations.
const (
	ContextCreate  = "create"
	ContextRestart = "restart"
	ContextDelete  = "delete"
)

// ContextOp is a change to a session's set of interpreters: each context
// is a REPL driver of its own, with its own globals, in the session's
// group and under its limits, as the session's own interpreter is.
type ContextOp struct {
	Op string `json:"op"` // ContextCreate, ContextRestart or ContextDelete
	ID string `json:"id"`
	// Runner, Protocol and Dir, for ContextCreate: the driver (as
	// ServeConfig.Repl and ReplProtocol; "json" only) and its working
	// directory.
	Runner   *Runner `json:"runner,omitempty"`
	Protocol string  `json:"protocol,omitempty"`
	Dir      string  `json:"dir,omitempty"`
}

// Display is one rich output of a Display step, as its driver wrote it
// (see package langs): a value with its representations by MIME type, or
// the exception that ended the cell.
type Display struct {
	// Main says the value is the cell's last expression's (Jupyter's
	// execute_result), not a display() call's or a figure's.
	Main      bool              `json:"main,omitempty"`
	Data      map[string]string `json:"data,omitempty"`
	Exception *Exception        `json:"exception,omitempty"`
}

// Exception is the uncaught error of a display cell.
type Exception struct {
	Name      string `json:"name"`
	Value     string `json:"value"`
	Traceback string `json:"traceback"`
}

// StepResult is what the init measured of one step, from inside the sandbox.
type StepResult struct {
	Name       string `json:"name"`
	Started    bool   `json:"started"` // false when the program could not be started
	StartError string `json:"start_error,omitempty"`
	ExitCode   int    `json:"exit_code"`
	Signal     int    `json:"signal"`
	CPUMillis  int64  `json:"cpu_ms"`
	WallMillis int64  `json:"wall_ms"`
	MaxRSSKB   int64  `json:"max_rss_kb"`
	// CPUExceeded and WallExceeded say which time limit ended the step.
	CPUExceeded  bool `json:"cpu_exceeded,omitempty"`
	WallExceeded bool `json:"wall_exceeded,omitempty"`
	// OutputExceeded says the step was killed for printing more than its cap.
	OutputExceeded bool `json:"output_exceeded,omitempty"`
	// MemoryExceeded says the step was stopped at its memory limit.
	MemoryExceeded bool `json:"memory_exceeded,omitempty"`
	// ProcessesReached says the step's processes and threads reached
	// their limit, so creating another failed.
	ProcessesReached bool `json:"processes_reached,omitempty"`
	// Stopped is how many processes a StopBackground job ended, the
	// session's own interpreter aside; ContextsStopped are the contexts
	// whose interpreters were among them.
	Stopped         int      `json:"stopped,omitempty"`
	ContextsStopped []string `json:"contexts_stopped,omitempty"`
	// StateLost says a session's interpreter ended during the step (a
	// timeout, a crash, exit()); the next step starts a fresh one: its
	// variables are gone, its files remain.
	StateLost bool `json:"state_lost,omitempty"`
	// DisplayTruncated says rich outputs past the step's DisplayBytes
	// were dropped.
	DisplayTruncated bool `json:"display_truncated,omitempty"`
}

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, t FrameType, payload []byte) error {
	if len(payload) > MaxFramePayload {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(payload))
	}
	buf := make([]byte, 5+len(payload))
	buf[0] = byte(t)
	binary.BigEndian.PutUint32(buf[1:5], uint32(len(payload)))
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one frame. It returns io.EOF only at a frame boundary.
func ReadFrame(r io.Reader) (FrameType, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, nil, fmt.Errorf("wire: truncated frame header: %w", err)
		}
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:5])
	if n > MaxFramePayload {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if errors.Is(err, io.EOF) {
			// A header promised a payload and the stream ended before any
			// of it: truncated, not the clean end between frames that a
			// bare io.EOF means to callers.
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("wire: truncated frame payload: %w", err)
	}
	return FrameType(hdr[0]), payload, nil
}

// EncodeGo is the control message that starts a prestarted runner's program:
// eight hex digits of length, then NUL-separated fields: the argument count,
// the arguments (argv[0] is the runtime, argv[1] the program file), and the
// environment as KEY=VALUE. A runner needs no parser beyond split.
func EncodeGo(argv, env []string) []byte {
	fields := append([]string{fmt.Sprint(len(argv))}, argv...)
	fields = append(fields, env...)
	payload := strings.Join(fields, "\x00")
	return []byte(fmt.Sprintf("%08x%s", len(payload), payload))
}
