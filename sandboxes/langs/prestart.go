package langs

// Launchers start a language runtime before its program is known. Each
// says it is ready with a byte on fd 3 (a socket; wire.Runner.Ready), then
// reads one control message there (wire.EncodeGo: 8 hex digits of
// length, then NUL-separated argc, argv, environment), then runs the
// program file argv[1] as the main program, as `runtime argv[1] args...`
// would: same argv, environment, working directory, __main__ / require.main,
// exit status and uncaught-error report. Only the runtime's start-up, which
// does not depend on the program, has happened earlier.

// pythonLauncher imports nothing beyond what the interpreter's start-up
// already loaded, so the program sees the modules a fresh `python3 main.py`
// would (TestPrestartedLooksFresh). Before it waits, it runs once through
// what it will do when the program comes (open and read a file, compile,
// set the environment): inside gVisor the first touch of every page of
// code and heap is a fault the sentry handles, and doing those now takes
// them off the program's path. For the same reason __main__ is built with
// type(sys) rather than by importing types (DESIGN.md, "Launchers").
const pythonLauncher = "import os, sys\n" + pythonWarmUp + "_warm_up()\n" + pythonGo

// pythonWarmUp touches, before the program comes, what the launcher does
// when it does (open and read a file, compile, set the environment).
const pythonWarmUp = `
def _warm_up():
    with open('/dev/null', 'rb') as f:
        compile(f.read() + b'print("")\n', '<warm-up>', 'exec', dont_inherit=True)
    os.environ['SANDBOXAPI_WARM_UP'] = os.path.abspath('.')
    del os.environ['SANDBOXAPI_WARM_UP']
`

// pythonGo says the runtime is ready, reads its program and runs it.
const pythonGo = `
def _sandboxapi_go():
    def readn(n):
        b = b''
        while len(b) < n:
            c = os.read(3, n - len(b))
            if not c:
                os._exit(70)
            b += c
        return b
    os.write(3, b'r')
    n = int(readn(8), 16)
    fields = readn(n).decode('utf-8', 'surrogateescape').split('\x00')
    os.close(3)
    argc = int(fields[0])
    argv, env = fields[1:1 + argc], fields[1 + argc:]
    os.environ.clear()
    for kv in env:
        k, _, v = kv.partition('=')
        os.environ[k] = v
    path = os.path.abspath(argv[1])
    sys.argv = argv[1:]
    sys.path[0] = os.path.dirname(path)
    with open(path, 'rb') as f:
        code = compile(f.read(), path, 'exec', dont_inherit=True)
    main = type(sys)('__main__')
    main.__file__ = path
    main.__builtins__ = __builtins__
    sys.modules['__main__'] = main
    return code, main.__dict__
_code, _globals = _sandboxapi_go()
del _sandboxapi_go, _warm_up
try:
    exec(_code, _globals)
except SystemExit:
    raise
except BaseException as e:
    # Report as the interpreter would, without this launcher's frame: the
    # hook prints the exception's own traceback, not the one it is given.
    e.__traceback__ = e.__traceback__.tb_next
    sys.excepthook(type(e), e, e.__traceback__)
    sys.exit(1)
`

// pythonZygote is a python3 that has started up and warmed up once and
// forks each execution's runner from itself (../guest/DESIGN.md,
// "Zygotes"). It runs as root in the sandbox's own namespaces and never
// runs a program: on fd 3, a SOCK_SEQPACKET socket, each message from an
// execution's PID 1 is its work dir, uid and gid, with nine descriptors:
// the runner's control socket, stdin, stdout and stderr, and the
// execution's PID, mount, network, IPC and UTS namespaces. The zygote
// enters the PID namespace for children only and forks; that child forks
// the runner and exits, so the runner, a process of the execution's PID
// namespace, is reparented to the execution's PID 1, which waits for it
// like any child. The runner enters the other namespaces, becomes the
// sandbox user, takes its descriptors, forgets the modules the zygote
// imported for its own use (so the program sees a fresh interpreter's),
// warms up again, writes its PID (8 hex digits, in the execution's
// namespace) on its control socket, and goes on as pythonLauncher does.
const pythonZygote = "import sys\n_fresh = set(sys.modules)\nimport os\n" + pythonWarmUp + "_warm_up()\n" + `
def _zygote():
    import ctypes, socket, select, gc
    libc = ctypes.CDLL(None, use_errno=True)
    NEWNS, NEWPID, NEWIPC, NEWUTS, NEWNET = 0x20000, 0x20000000, 0x8000000, 0x4000000, 0x40000000
    own = os.open('/proc/self/ns/pid', os.O_RDONLY | os.O_CLOEXEC)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, 0, 3)
    # A collection in a runner would write to every object's header, a
    # copy of each page the zygote's heap is on.
    gc.freeze()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(srv, 4096, 9)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)
        child = -1
        try:
            workdir, uid, gid = msg.decode('utf-8', 'surrogateescape').split('\x00')
            uid, gid = int(uid), int(gid)
            if len(fds) == 9 and libc.setns(fds[4], NEWPID) == 0:
                try:
                    child = os.fork()
                finally:
                    if child != 0 and libc.setns(own, NEWPID) != 0:
                        # Its next children would be born in that execution.
                        os._exit(1)
        except BaseException:
            if child == 0:
                os._exit(1)
        if child == 0:
            break
        for fd in fds:
            os.close(fd)
        if child > 0:
            os.waitpid(child, 0)
    # This child of the zygote was born in the execution's PID namespace,
    # its parent outside: it forks the runner and exits, and the runner is
    # reparented to the execution's PID 1. Nothing of the user's has run in
    # either, nor will until the runner is the sandbox user in the
    # execution's namespaces alone; any failure ends it.
    try:
        if os.fork() != 0:
            os._exit(0)
        # The socket object would close fd 3, the runner's control socket
        # from here on, when it goes.
        srv.detach()
        ctl, stdin, stdout, stderr = fds[:4]
        for fd, flag in zip(fds[5:], (NEWNS, NEWNET, NEWIPC, NEWUTS)):
            if libc.setns(fd, flag) != 0:
                os._exit(71)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        os.setpgid(0, 0)
        for fd, to in ((stdin, 0), (stdout, 1), (stderr, 2), (ctl, 3)):
            os.dup2(fd, to)
        os.closerange(4, os.sysconf('SC_OPEN_MAX'))
        os.chdir(workdir)
        for _ in range(10000):
            if os.getppid() == 1:
                gc.unfreeze()
                return
            select.select([], [], [], 0.001)
    except BaseException:
        pass
    os._exit(71)
_zygote()
del _zygote
# Kept, not freed: freeing them would write to the pages they share with
# the zygote.
_zygote_modules = [sys.modules.pop(_m) for _m in set(sys.modules) - _fresh]
del _fresh
_warm_up()
os.write(3, b'%08x' % os.getpid())
` + pythonGo

// nodeLauncher hands the program to Node's own main-module loader.
const nodeLauncher = `
const fs = require('fs');
function readn(n) {
  const b = Buffer.alloc(n); let off = 0;
  while (off < n) {
    let r;
    try { r = fs.readSync(3, b, off, n - off, null); } catch (e) { if (e.code === 'EAGAIN') continue; throw e; }
    if (r === 0) process.exit(70);
    off += r;
  }
  return b;
}
fs.writeSync(3, 'r');
const n = parseInt(readn(8).toString(), 16);
const fields = readn(n).toString('utf8').split('\0');
fs.closeSync(3);
const argc = parseInt(fields[0], 10);
const argv = fields.slice(1, 1 + argc), env = fields.slice(1 + argc);
for (const k of Object.keys(process.env)) delete process.env[k];
for (const kv of env) { const i = kv.indexOf('='); process.env[kv.slice(0, i)] = kv.slice(i + 1); }
const path = require('path').resolve(argv[1]);
process.argv = [process.execPath, path, ...argv.slice(2)];
require('module').runMain(path);
`

// Prestart is how a language's runtime is started ahead of its program:
// the argv of a runtime that runs a launcher, or nil when the language has
// no launcher (its programs start the ordinary way).
func Prestart(l *Language) []string {
	switch l.ID {
	case "python3":
		return []string{"/usr/bin/python3", "-c", pythonLauncher}
	case "javascript":
		return []string{"/usr/bin/node", "-e", nodeLauncher}
	}
	return nil
}

// Zygote is how a language's prestarted runners are forked from one
// runtime started once per sandbox instead of each started anew (the
// argv of that runtime), or nil when the language has none. Only python3
// has one: node's runtime has threads of its own, which a fork does not
// carry.
func Zygote(l *Language) []string {
	if l.ID == "python3" {
		return []string{"/usr/bin/python3", "-c", pythonZygote}
	}
	return nil
}
