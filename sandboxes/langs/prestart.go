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
const pythonLauncher = `
import os, sys
with open('/dev/null', 'rb') as _f:
    compile(_f.read() + b'print("")\n', '<warm-up>', 'exec', dont_inherit=True)
os.environ['SANDBOXAPI_WARM_UP'] = os.path.abspath('.')
del os.environ['SANDBOXAPI_WARM_UP'], _f
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
del _sandboxapi_go
try:
    exec(_code, _globals)
except SystemExit:
    raise
except BaseException as e:
    # Report as the interpreter would, without this launcher's frame.
    sys.excepthook(type(e), e, e.__traceback__.tb_next)
    sys.exit(1)
`

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
