package langs

import "fmt"

// REPL drivers keep one interpreter alive for a whole session, so variables,
// functions and imports persist between executions. A driver reads one
// message per execution on fd 3 (8 hex digits of length, then the payload),
// runs the code against its persistent state, and then, to mark the end of
// the execution's output, writes the message's nonce to stdout and to
// stderr (after flushing them) and the execution's exit status as a decimal
// line on fd 4. The nonce is fresh and random for each execution, so no
// program can fake the end of its own output. An exception ends the
// execution, never the interpreter.
//
// Payloads are JSON {"nonce","stdin","code"}, except for bash, whose driver
// gets nonce NUL code NUL (no length), with stdin in the file named by
// SANDBOXAPI_STDIN.

// ReplProtocol says how a driver wants its messages.
type ReplProtocol string

// Protocols.
const (
	ReplJSON ReplProtocol = "json"
	ReplNUL  ReplProtocol = "nul"
)

// Repl is a language's session driver.
type Repl struct {
	Argv     []string
	Protocol ReplProtocol
}

// REPLStdinFile is where the session init puts an execution's stdin for
// drivers that read it from a file.
const REPLStdinFile = "/tmp/.sandboxapi-stdin"

const pythonRepl = `
import os, sys, io, json, types, traceback
_m = types.ModuleType('__main__'); _m.__builtins__ = __builtins__
sys.modules['__main__'] = _m
sys.path[0] = os.getcwd()
def _sandboxapi_loop(g):
    def readn(n):
        b = b''
        while len(b) < n:
            c = os.read(3, n - len(b))
            if not c:
                os._exit(0)
            b += c
        return b
    import site, importlib
    user_site = site.getusersitepackages()
    real_stdin = sys.stdin
    while True:
        msg = json.loads(readn(int(readn(8), 16)))
        # Packages installed into the session (pip install --user) since
        # the interpreter started become importable.
        if user_site not in sys.path and os.path.isdir(user_site):
            site.addsitedir(user_site)
            importlib.invalidate_caches()
        sys.stdin = io.TextIOWrapper(io.BytesIO(msg['stdin'].encode('utf-8', 'surrogateescape')))
        status = 0
        try:
            exec(compile(msg['code'], '<session>', 'exec'), g)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException as e:
            sys.excepthook(type(e), e, e.__traceback__.tb_next)
            status = 1
        sys.stdin = real_stdin
        for f, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            try:
                f.flush()
            except Exception:
                pass
            os.write(fd, msg['nonce'].encode())
        os.write(4, b'%d\n' % status)
_sandboxapi_loop(_m.__dict__)
`

// nodeRepl keeps its own names inside a function, out of the global scope
// the session's code declares into.
const nodeRepl = `
(() => {
const fs = require('fs'), vm = require('vm'), { Readable } = require('stream');
globalThis.require = require; globalThis.module = module; globalThis.__dirname = process.cwd();
function readn(n) {
  const b = Buffer.alloc(n); let off = 0;
  while (off < n) {
    let r;
    try { r = fs.readSync(3, b, off, n - off, null); } catch (e) { if (e.code === 'EAGAIN') continue; throw e; }
    if (r === 0) process.exit(0);
    off += r;
  }
  return b;
}
const compileCode = %s;
let exitCode = null;
const realExit = process.exit;
process.exit = (c) => { exitCode = c === undefined ? 0 : c; throw Object.assign(new Error('process.exit'), { sandboxapiExit: true }); };
async function loop() {
  for (;;) {
    const msg = JSON.parse(readn(parseInt(readn(8).toString(), 16)).toString('utf8'));
    Object.defineProperty(process, 'stdin', { value: Readable.from([Buffer.from(msg.stdin)]), configurable: true, writable: true });
    let status = 0; exitCode = null;
    try {
      const r = vm.runInThisContext(compileCode(msg.code), { filename: 'session' });
      if (r && typeof r.then === 'function') await r;
      await new Promise((res) => setImmediate(res));
    } catch (e) {
      if (e && e.sandboxapiExit) { status = exitCode; }
      else { process.stderr.write((e && e.stack ? e.stack : String(e)) + '\n'); status = 1; }
    }
    fs.writeSync(1, msg.nonce); fs.writeSync(2, msg.nonce);
    fs.writeSync(4, String(status) + '\n');
  }
}
process.on('uncaughtException', (e) => { process.stderr.write((e && e.stack ? e.stack : String(e)) + '\n'); });
loop();
})();
`

const rubyRepl = `
require 'json'; require 'stringio'
$stdout.sync = true; $stderr.sync = true
ctl = IO.for_fd(3, 'rb'); done = IO.for_fd(4, 'w'); done.sync = true
out = IO.for_fd(1, 'w'); err = IO.for_fd(2, 'w'); out.sync = true; err.sync = true
__sandboxapi_binding = TOPLEVEL_BINDING
# Gems installed into the session land in GEM_HOME under the work dir.
ENV['GEM_HOME'] ||= File.join(Dir.pwd, '.gems')
ENV['GEM_PATH'] = [ENV['GEM_HOME'], *Gem.default_path].join(File::PATH_SEPARATOR)
loop do
  Gem.clear_paths
  hdr = ctl.read(8) or exit(0)
  msg = JSON.parse(ctl.read(hdr.to_i(16)))
  $stdin = StringIO.new(msg['stdin'])
  status = 0
  begin
    eval(msg['code'], __sandboxapi_binding, 'session', 1)
  rescue SystemExit => e
    status = e.status
  rescue Exception => e
    $stderr.puts e.full_message(highlight: false)
    status = 1
  end
  $stdin = STDIN
  $stdout.flush rescue nil; $stderr.flush rescue nil
  out.write(msg['nonce']); err.write(msg['nonce'])
  done.write("#{status}\n")
end
`

const phpRepl = `
$__sandboxapi_ctl = fopen('php://fd/3', 'rb');
$__sandboxapi_done = fopen('php://fd/4', 'wb');
while (true) {
    $__sandboxapi_h = fread($__sandboxapi_ctl, 8);
    if ($__sandboxapi_h === false || strlen($__sandboxapi_h) < 8) { exit(0); }
    $__sandboxapi_n = hexdec($__sandboxapi_h); $__sandboxapi_p = '';
    while (strlen($__sandboxapi_p) < $__sandboxapi_n) { $__sandboxapi_p .= fread($__sandboxapi_ctl, $__sandboxapi_n - strlen($__sandboxapi_p)); }
    $__sandboxapi_m = json_decode($__sandboxapi_p, true);
    $__sandboxapi_status = 0;
    try {
        eval(preg_replace('/^\s*<\?php/', '', $__sandboxapi_m['code']));
    } catch (Throwable $__sandboxapi_e) {
        fwrite(STDERR, 'PHP Fatal error:  Uncaught ' . $__sandboxapi_e . "\n");
        $__sandboxapi_status = 255;
    }
    while (ob_get_level() > 0) { ob_end_flush(); }
    flush();
    fwrite(STDOUT, $__sandboxapi_m['nonce']); fwrite(STDERR, $__sandboxapi_m['nonce']);
    fwrite($__sandboxapi_done, $__sandboxapi_status . "\n");
}
`

const bashRepl = `
while :; do
  IFS= read -r -d '' __sandboxapi_nonce <&3 || exit 0
  IFS= read -r -d '' __sandboxapi_code <&3 || exit 0
  eval "$__sandboxapi_code" < "$SANDBOXAPI_STDIN"
  __sandboxapi_status=$?
  printf '%s' "$__sandboxapi_nonce"; printf '%s' "$__sandboxapi_nonce" >&2
  printf '%d\n' "$__sandboxapi_status" >&4
done
`

// REPLFor is the session driver of a language, or nil when its sessions
// compile and run each execution instead (files persist, state does not).
func REPLFor(l *Language) *Repl {
	switch l.ID {
	case "python3":
		return &Repl{Argv: []string{"/usr/bin/python3", "-u", "-c", pythonRepl}, Protocol: ReplJSON}
	case "javascript":
		return &Repl{Argv: []string{"/usr/bin/node", "-e", fmt.Sprintf(nodeRepl, "(c) => c")}, Protocol: ReplJSON}
	case "typescript":
		// Each execution is transpiled on its own and run in the same
		// global scope, so declarations persist as in JavaScript.
		ts := `((ts) => (c) => ts.transpileModule(c, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.None } }).outputText)(require(['/usr/lib/node_modules/typescript', '/usr/local/lib/node_modules/typescript'].find((p) => require('fs').existsSync(p))))`
		return &Repl{Argv: []string{"/usr/bin/node", "-e", fmt.Sprintf(nodeRepl, ts)}, Protocol: ReplJSON}
	case "ruby":
		return &Repl{Argv: []string{"/usr/bin/ruby", "-e", rubyRepl}, Protocol: ReplJSON}
	case "php":
		return &Repl{Argv: []string{"/usr/bin/php", "-r", phpRepl}, Protocol: ReplJSON}
	case "bash":
		return &Repl{Argv: []string{"/bin/bash", "--noprofile", "--norc", "-c", bashRepl}, Protocol: ReplNUL}
	}
	return nil
}
