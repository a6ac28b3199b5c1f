package langs

import (
	_ "embed"
	"fmt"
)

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
// Payloads are JSON {"nonce","stdin","code","display"}, except for bash,
// whose driver gets nonce NUL code NUL (no length), with stdin in the file
// named by SANDBOXAPI_STDIN.
//
// A driver with Display set also runs code as a Jupyter cell when the
// message says "display": true. The cell's rich outputs go on fd 4 ahead
// of the status line, each as 'd', eight hex digits of length and a JSON
// object: {"main": bool, "data": {MIME type: content}} for a value (main:
// the cell's last expression, Jupyter's execute_result; otherwise a
// display() call or a figure), {"exception": {"name", "value",
// "traceback"}} for the error that ended the cell, whose traceback then
// goes there and not to stderr. Binary content (image/png, image/jpeg) is
// base64. A status line starts with a digit or '-', never with 'd'.

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
	// Display says the driver runs display cells (see above), and gives
	// a cell the environment its message names ("env"), for the cell.
	Display bool
}

// REPLStdinFile is where the session init puts an execution's stdin for
// drivers that read it from a file.
const REPLStdinFile = "/tmp/.sandboxapi-stdin"

// pythonRepl is the python3 driver. Matplotlib's figures are a display
// cell's outputs: when the session's code imports matplotlib, the driver
// makes its default backend Agg's canvas with a show() that sends the
// open figures (otherwise sent at the cell's end), so show() neither
// blocks nor warns; programs the session starts keep matplotlib's own
// default, and a cell that does not import matplotlib pays nothing.
//
//go:embed repl_python.py
var pythonRepl string

// nodeRepl keeps its own names inside a function, out of the global scope
// the session's code declares into.
const nodeRepl = `
(() => {
const fs = require('fs'), vm = require('vm'), util = require('util'), { Readable } = require('stream');
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
function writeAll(fd, b) {
  for (let off = 0; off < b.length;) {
    try { off += fs.writeSync(fd, b, off); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
  }
}
// A rich output on fd 4, ahead of the status line: 'd', eight hex digits
// of length, the JSON.
function send(m) {
  const j = Buffer.from(JSON.stringify(m));
  writeAll(4, Buffer.concat([Buffer.from('d' + j.length.toString(16).padStart(8, '0')), j]));
}
// topLevelAwait runs code that only compiles with a top-level await, as
// node's own REPL does (its declarations become globals, the last
// expression's value is the result); code that compiles without it never
// comes here. The REPL is made on first use: it adds the built-in modules
// as globals (fs, path, ...); its _ and _error are taken back.
let awaitRepl = null, awaitDone = null;
function topLevelAwait(src) {
  const repl = require('repl');
  if (!awaitRepl) {
    const { PassThrough } = require('stream');
    const sink = new PassThrough(); sink.resume();
    awaitRepl = repl.start({ input: new PassThrough(), output: sink, terminal: false, useGlobal: true, prompt: '' });
    delete globalThis._; delete globalThis._error;
    // An error after an await reaches the REPL's domain, not the callback.
    awaitRepl._domain.removeAllListeners('error');
    awaitRepl._domain.on('error', (e) => { if (awaitDone) awaitDone(e); });
  }
  return new Promise((resolve, reject) => {
    const done = (err, r) => {
      if (awaitDone !== done) return;
      awaitDone = null;
      // Code that does not parse comes back wrapped, as more input the
      // REPL would wait for: its own SyntaxError is the cell's.
      if (err instanceof repl.Recoverable) reject(err.err);
      else if (err) reject(err); else resolve(r);
    };
    awaitDone = done;
    awaitRepl.eval(src, globalThis, 'session', done);
  });
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
    // The cell's own environment, put back as it was after it.
    const env = msg.env || {}, envSaved = {};
    for (const k of Object.keys(env)) { envSaved[k] = Object.prototype.hasOwnProperty.call(process.env, k) ? process.env[k] : undefined; process.env[k] = env[k]; }
    try {
      const src = compileCode(msg.code);
      let script = null;
      try { script = new vm.Script(src, { filename: 'session' }); } catch (e) {
        if (!(e instanceof SyntaxError && /\bawait\b/.test(src))) throw e;
      }
      let r = script ? script.runInThisContext() : await topLevelAwait(src);
      if (r && typeof r.then === 'function') r = await r;
      await new Promise((res) => setImmediate(res));
      // A display cell's value is its completion value, a promise's once
      // it resolved, as the REPL prints it.
      if (msg.display && r !== undefined) send({ main: true, data: { 'text/plain': util.inspect(r) } });
    } catch (e) {
      if (e && e.sandboxapiExit) { status = exitCode; }
      else if (msg.display) {
        const err = e instanceof Error;
        // The driver's frames (vm's, the REPL's and this script's,
        // [eval]) are not the cell's.
        const tb = err && e.stack ? e.stack.split('\n').filter((l) => !/^\s+at .*(node:vm:|node:repl:|node:domain:|node:internal\/repl|\[eval\])/.test(l)).join('\n') : util.inspect(e);
        send({ exception: { name: err ? e.name : (e != null && e.constructor ? e.constructor.name : typeof e), value: err ? e.message : util.inspect(e), traceback: tb } });
        status = 1;
      } else { process.stderr.write((e && e.stack ? e.stack : String(e)) + '\n'); status = 1; }
    }
    for (const k of Object.keys(envSaved)) { if (envSaved[k] === undefined) delete process.env[k]; else process.env[k] = envSaved[k]; }
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
		return &Repl{Argv: []string{"/usr/bin/python3", "-u", "-c", pythonRepl}, Protocol: ReplJSON, Display: true}
	case "javascript":
		return &Repl{Argv: []string{"/usr/bin/node", "-e", fmt.Sprintf(nodeRepl, "(c) => c")}, Protocol: ReplJSON, Display: true}
	case "typescript":
		// Each execution is transpiled on its own and run in the same
		// global scope, so declarations persist as in JavaScript.
		ts := `((ts) => (c) => ts.transpileModule(c, { compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.None } }).outputText)(require(['/usr/lib/node_modules/typescript', '/usr/local/lib/node_modules/typescript'].find((p) => require('fs').existsSync(p))))`
		return &Repl{Argv: []string{"/usr/bin/node", "-e", fmt.Sprintf(nodeRepl, ts)}, Protocol: ReplJSON, Display: true}
	case "ruby":
		return &Repl{Argv: []string{"/usr/bin/ruby", "-e", rubyRepl}, Protocol: ReplJSON}
	case "php":
		return &Repl{Argv: []string{"/usr/bin/php", "-r", phpRepl}, Protocol: ReplJSON}
	case "bash":
		return &Repl{Argv: []string{"/bin/bash", "--noprofile", "--norc", "-c", bashRepl}, Protocol: ReplNUL}
	}
	return nil
}
