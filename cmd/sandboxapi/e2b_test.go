package main_test

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/clients"
	"github.com/sandboxapi/sandboxapi/ops/soak"
)

// e2bScript drives E2B's own SDK (npm e2b) against the door: one
// program, many checks, one JSON answer for the test to judge. Every
// failure it meets is recorded as {name, message} rather than thrown, so
// the test can say which call failed and how.
const e2bScript = `
import { Sandbox, CommandExitError } from "e2b";

const out = {};
const fail = (e) => ({ name: e?.name, message: String(e?.message ?? e) });
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

// Latency, from the SDK's side: create, then a first command.
const creates = [], firstRuns = [];
for (let i = 0; i < 5; i++) {
	let t = performance.now();
	const s = await Sandbox.create();
	creates.push(performance.now() - t);
	t = performance.now();
	await s.commands.run("true");
	firstRuns.push(performance.now() - t);
	await s.kill();
}
out.createMs = median(creates);
out.firstRunMs = median(firstRuns);
{
	const s = await Sandbox.create();
	await s.commands.run("true");
	const later = [];
	for (let i = 0; i < 5; i++) {
		const t = performance.now();
		await s.commands.run("true");
		later.push(performance.now() - t);
	}
	out.laterRunMs = median(later);
	await s.kill();
}

const sbx = await Sandbox.create({ metadata: { purpose: "e2b-test" }, envs: { GREETING: "hello" } });
out.id = sbx.sandboxId;

try {
	await sbx.commands.run("echo hi && exit 3");
	out.exit = { thrown: false };
} catch (e) {
	out.exit = { thrown: e instanceof CommandExitError, exitCode: e.exitCode, stdout: e.stdout, stderr: e.stderr };
}
const who = await sbx.commands.run("echo \"$GREETING $X\"; pwd; echo err >&2", { envs: { X: "there" } });
out.who = { stdout: who.stdout, stderr: who.stderr, exitCode: who.exitCode };
const cwd = await sbx.commands.run("pwd", { cwd: "/tmp" });
out.cwd = cwd.stdout;

await sbx.files.write("notes/hello.txt", "hi there");
out.read = await sbx.files.read("notes/hello.txt");
const bytes = new Uint8Array(200000).map((_, i) => (i * 7) % 256);
await sbx.files.write("blob.bin", new Blob([bytes]));
const back = await sbx.files.read("blob.bin", { format: "bytes" });
out.blobSame = back.length === bytes.length && back.every((b, i) => b === bytes[i]);
out.list = (await sbx.files.list("notes")).map((e) => ({ name: e.name, type: e.type, path: e.path, size: e.size }));
out.catFromCommand = (await sbx.commands.run("cat notes/hello.txt")).stdout;
out.exists = [await sbx.files.exists("notes/hello.txt"), await sbx.files.exists("nope.txt")];
out.makeDir = [await sbx.files.makeDir("made/deep"), await sbx.files.makeDir("made/deep")];
out.rename = (await sbx.files.rename("notes/hello.txt", "notes/moved.txt")).path;
await sbx.files.remove("notes/moved.txt");
out.afterRemove = await sbx.files.exists("notes/moved.txt");
try { await sbx.files.read("missing.txt"); out.readMissing = null; } catch (e) { out.readMissing = fail(e); }

// A background command's output streams to onStdout as it comes.
const chunks = [];
const t0 = performance.now();
const bg = await sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.4; done", {
	background: true, onStdout: (d) => chunks.push([Math.round(performance.now() - t0), d]),
});
out.bgPid = bg.pid;
out.bgListed = (await sbx.commands.list()).some((p) => p.pid === bg.pid);
const bgResult = await bg.wait();
out.bg = { chunks, exitCode: bgResult.exitCode, stdout: bgResult.stdout };

// Another stream follows a running command. It sees what the command
// prints after it connects, as envd's Connect does: the command prints
// nothing for its first 2 s, time enough for the connect on a busy host.
const slow = await sbx.commands.run("sleep 2; echo started; echo done", { background: true });
const follower = await sbx.commands.connect(slow.pid);
out.followed = (await follower.wait()).stdout;

// Several files at once, and a streamed upload (octet-stream).
const many = await sbx.files.write([{ path: "m/one.txt", data: "1" }, { path: "m/two.txt", data: "22" }]);
out.many = many.map((w) => w.path);
await sbx.files.write("streamed.txt", new Blob(["from a stream"]).stream());
out.streamed = await sbx.files.read("streamed.txt");
const gi = await sbx.files.getInfo("m/two.txt");
out.getInfo = { name: gi.name, type: gi.type, size: gi.size };
out.deep = (await sbx.files.list("m", { depth: 2 })).map((e) => e.name).sort();

await sbx.setTimeout(120_000);
const info = await sbx.getInfo();
out.info = { templateId: info.templateId, metadata: info.metadata, state: info.state,
	lifeLeftS: Math.round((info.endAt.getTime() - Date.now()) / 1000) };

const listed = await Sandbox.list().nextItems();
out.listed = listed.map((s) => s.sandboxId);
out.listedByMeta = (await Sandbox.list({ query: { metadata: { purpose: "e2b-test" } } }).nextItems()).map((s) => s.sandboxId);
out.listedOtherMeta = (await Sandbox.list({ query: { metadata: { purpose: "other" } } }).nextItems()).length;

const again = await Sandbox.connect(sbx.sandboxId);
out.connected = (await again.commands.run("cat blob.bin | wc -c")).stdout.trim();

// A server in the background keeps serving while commands, file
// operations and other commands' input run beside it.
let serverOut = "";
const server = await sbx.commands.run("python3 -u -m http.server 8123 --bind 127.0.0.1", {
	background: true, onStderr: (d) => { serverOut += d }, onStdout: (d) => { serverOut += d },
});
for (let i = 0; i < 100 && !serverOut.includes("Serving"); i++) await new Promise((r) => setTimeout(r, 100));
out.besideServer = (await sbx.commands.run(
	"python3 -c 'import urllib.request as u; print(len(u.urlopen(\"http://127.0.0.1:8123/blob.bin\").read()))'")).stdout.trim();
out.fileBesideServer = await sbx.files.read("streamed.txt");
const fed = await sbx.commands.run("read -r a; echo got:$a; cat", { background: true, stdin: true });
await sbx.commands.sendStdin(fed.pid, "first\n");
await fed.sendStdin("second\n");
await sbx.commands.closeStdin(fed.pid);
out.stdin = (await fed.wait()).stdout;
out.serverKilled = await sbx.commands.kill(server.pid);
try { await server.wait(); out.serverWait = null; } catch (e) { out.serverWait = { name: e.name, exitCode: e.exitCode } }
out.serverLog = serverOut.includes("GET /blob.bin");

// A directory watch, recursive: what files, commands and new
// subdirectories do in it comes as events.
await sbx.files.makeDir("watched");
const seen = [];
const watch = await sbx.files.watchDir("watched", (ev) => seen.push(ev.type + " " + ev.name), { recursive: true });
await sbx.files.write("watched/a.txt", "a");
await sbx.commands.run("mkdir watched/sub && sleep 0.3 && echo b > watched/sub/b.txt && rm watched/a.txt");
for (let i = 0; i < 100 && !seen.includes("remove a.txt"); i++) await new Promise((r) => setTimeout(r, 50));
await watch.stop();
out.watched = seen;
try { await sbx.files.watchDir("no-such-dir", () => {}); out.watchMissing = null; } catch (e) { out.watchMissing = fail(e); }
// The polled watchers (envd's CreateWatcher, as E2B's Python SDK uses
// them), through the SDK's own client of the service.
const wid = (await sbx.files.rpc.createWatcher({ path: "/work/watched", recursive: false })).watcherId;
await sbx.files.write("watched/c.txt", "c");
let polled = [];
for (let i = 0; i < 40 && !polled.includes("c.txt:1"); i++) {
	await new Promise((r) => setTimeout(r, 50));
	polled = polled.concat((await sbx.files.rpc.getWatcherEvents({ watcherId: wid })).events.map((e) => e.name + ":" + e.type));
}
await sbx.files.rpc.removeWatcher({ watcherId: wid });
let polledGone = null;
try { await sbx.files.rpc.getWatcherEvents({ watcherId: wid }); } catch (e) { polledGone = e.code; }
out.polled = { events: polled, goneCode: polledGone };

// A terminal: an interactive login shell, typed at and resized.
let term = "";
const until = async (text) => { for (let i = 0; i < 200 && !term.includes(text); i++) await new Promise((r) => setTimeout(r, 50)) };
const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => { term += new TextDecoder().decode(d) } });
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("stty size; tty\n"));
await until("24 80");
await sbx.pty.resize(pty.pid, { cols: 120, rows: 40 });
await sbx.pty.sendInput(pty.pid, new TextEncoder().encode("stty size; exit 7\n"));
await until("40 120");
let ptyEnd;
try { ptyEnd = { exitCode: (await pty.wait()).exitCode } } catch (e) { ptyEnd = { exitCode: e.exitCode } }
out.pty = { first: term.includes("24 80"), tty: /\/dev\/pts\/\d+/.test(term), resized: term.includes("40 120"), exitCode: ptyEnd.exitCode };

// Another account sees none of it.
const other = { apiKey: process.env.OTHER_KEY };
try { await Sandbox.getInfo(sbx.sandboxId, other); out.otherInfo = null; } catch (e) { out.otherInfo = fail(e); }
try { await Sandbox.connect(sbx.sandboxId, other); out.otherConnect = null; } catch (e) { out.otherConnect = fail(e); }
out.otherKill = await Sandbox.kill(sbx.sandboxId, other);
out.otherList = (await Sandbox.list(other).nextItems()).map((s) => s.sandboxId);

// Unsupported: a clear refusal.
try { await Sandbox.create("my-custom-template"); out.template = null; } catch (e) { out.template = fail(e); }
try { await sbx.pause(); out.pause = null; } catch (e) { out.pause = fail(e); }

// A killed command ends alone: the sandbox and its files carry on.
const sleeper = await sbx.commands.run("sleep 30", { background: true });
out.killed = await sleeper.kill();
try { await sleeper.wait(); out.killedWait = null; } catch (e) { out.killedWait = { name: e.name, exitCode: e.exitCode } }
out.afterKillRun = (await sbx.commands.run("echo still; cat streamed.txt")).stdout;

await sbx.kill();
out.runningAfterKill = await sbx.isRunning();
try { await sbx.commands.run("echo still"); out.runAfterKill = null; } catch (e) { out.runAfterKill = fail(e); }
try { await sbx.files.read("blob.bin"); out.readAfterKill = null; } catch (e) { out.readAfterKill = fail(e); }
out.killAgain = await Sandbox.kill(sbx.sandboxId);
try { await Sandbox.getInfo(sbx.sandboxId); out.infoAfterKill = null; } catch (e) { out.infoAfterKill = fail(e); }

// Past its timeout, a sandbox is gone.
const short = await Sandbox.create({ timeoutMs: 2000 });
await new Promise((r) => setTimeout(r, 3500));
out.runningPastTimeout = await short.isRunning();
try { await short.commands.run("true"); out.runPastTimeout = null; } catch (e) { out.runPastTimeout = fail(e); }

console.log(JSON.stringify(out));
`

type e2bFailure struct {
	Name    string `json:"name"`
	Message string `json:"message"`
}

// TestE2BClient: E2B's SDK, unchanged, against a dev server, with
// E2B_API_URL and E2B_SANDBOX_URL pointing at the door (docs/e2b.md):
// sandboxes are created, run commands (exit codes as the SDK reports
// them, environment, cwd), read and write files (text and binary),
// stream a background command's output, change their timeout, list and
// connect; another account sees none of it; a killed or timed-out
// sandbox fails as the SDK expects; what is not supported is refused
// with a message. The code interpreter's runCode and contexts are
// testCodeInterpreter's, on the same server.
func TestE2BClient(t *testing.T) {
	s := startDev(t, t.TempDir())
	other := createAccount(t, s.dataDir, "pro")
	var out struct {
		CreateMs, FirstRunMs, LaterRunMs float64
		ID                               string
		Exit                             struct {
			Thrown   bool
			ExitCode int
			Stdout   string
		}
		Who struct {
			Stdout, Stderr string
			ExitCode       int
		}
		Cwd, Read      string
		BlobSame       bool
		List           []struct{ Name, Type, Path string }
		CatFromCommand string
		Exists         []bool
		MakeDir        []bool
		Rename         string
		AfterRemove    bool
		ReadMissing    *e2bFailure
		BgPid          int
		BgListed       bool
		Bg             struct {
			Chunks   [][2]any
			ExitCode int
			Stdout   string
		}
		Followed   string
		Killed     bool
		KilledWait *struct {
			Name     string
			ExitCode int
		}
		AfterKillRun                   string
		BesideServer, FileBesideServer string
		ServerLog, ServerKilled        bool
		ServerWait                     *struct {
			Name     string
			ExitCode int
		}
		Stdin        string
		Watched      []string
		WatchMissing *e2bFailure
		Polled       struct {
			Events   []string
			GoneCode int
		}
		Pty struct {
			First, Tty, Resized bool
			ExitCode            int
		}
		Many     []string
		Streamed string
		GetInfo  struct {
			Name, Type string
			Size       int
		}
		Deep []string
		Info struct {
			TemplateID string `json:"templateId"`
			Metadata   map[string]string
			State      string
			LifeLeftS  int
		}
		Listed, ListedByMeta          []string
		ListedOtherMeta               int
		Connected                     string
		OtherInfo, OtherConnect       *e2bFailure
		OtherKill                     bool
		OtherList                     []string
		Template, Pause               *e2bFailure
		RunningAfterKill, KillAgain   bool
		RunAfterKill, ReadAfterKill   *e2bFailure
		InfoAfterKill, RunPastTimeout *e2bFailure
		RunningPastTimeout            bool
	}
	t.Run("code interpreter", func(t *testing.T) { testCodeInterpreter(t, s) })
	t.Run("StreamInput", func(t *testing.T) { testStreamInput(t, s) })
	runE2B(t, s, e2bScript, &out, "OTHER_KEY="+other.APIKey)
	t.Logf("Sandbox.create() median %.0f ms, first commands.run median %.0f ms (5 of each), later commands.run median %.0f ms, from the SDK",
		out.CreateMs, out.FirstRunMs, out.LaterRunMs)

	check := e2bCheck(t)
	failed := func(f *e2bFailure, name, contains string) bool {
		return f != nil && (name == "" || f.Name == name) && strings.Contains(f.Message, contains)
	}
	// Each commands.run and runCode counts one execution, and nothing else
	// does: the scripts and StreamInput ran 26 commands and 13 cells, besides their file,
	// context, list and control calls.
	var used float64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		_, usage := s.call(s.key, "GET", "/v1/usage", "")
		used, _ = usage["executions"].(float64)
		if used >= 39 || time.Now().After(deadline) {
			break
		}
	}
	check("each command and cell is one execution", used == 39, used)
	check("commands.run exit code", out.Exit.Thrown && out.Exit.ExitCode == 3 && out.Exit.Stdout == "hi\n", out.Exit)
	check("environment and home", out.Who.Stdout == "hello there\n/work\n" && out.Who.Stderr == "err\n" && out.Who.ExitCode == 0, out.Who)
	check("cwd", out.Cwd == "/tmp\n", out.Cwd)
	check("files.write then files.read", out.Read == "hi there", out.Read)
	check("binary file round trip", out.BlobSame, out.BlobSame)
	check("files.list", len(out.List) == 1 && out.List[0].Name == "hello.txt" && out.List[0].Type == "file" && out.List[0].Path == "/work/notes/hello.txt", out.List)
	check("a written file is the command's", out.CatFromCommand == "hi there", out.CatFromCommand)
	check("files.exists", slices.Equal(out.Exists, []bool{true, false}), out.Exists)
	check("files.makeDir", slices.Equal(out.MakeDir, []bool{true, false}), out.MakeDir)
	check("files.rename and remove", out.Rename == "/work/notes/moved.txt" && !out.AfterRemove, []any{out.Rename, out.AfterRemove})
	check("reading a missing file", failed(out.ReadMissing, "FileNotFoundError", "missing.txt"), out.ReadMissing)
	check("background command streams", out.BgPid > 0 && out.BgListed && out.Bg.ExitCode == 0 && out.Bg.Stdout == "line1\nline2\nline3\n" &&
		len(out.Bg.Chunks) >= 2 && toFloat(out.Bg.Chunks[len(out.Bg.Chunks)-1][0])-toFloat(out.Bg.Chunks[0][0]) >= 400, out.Bg)
	check("commands.connect follows a running command", out.Followed == "started\ndone\n", out.Followed)
	check("a killed command ends; the sandbox and its files carry on", out.Killed && out.KilledWait != nil && out.KilledWait.ExitCode == -1 &&
		out.AfterKillRun == "still\nfrom a stream", []any{out.Killed, out.KilledWait, out.AfterKillRun})
	check("a background server serves commands beside it", out.BesideServer == "200000" && out.FileBesideServer == "from a stream" && out.ServerLog,
		[]any{out.BesideServer, out.FileBesideServer, out.ServerLog})
	check("stdin: sendStdin, then closeStdin", out.Stdin == "got:first\nsecond\n", out.Stdin)
	check("files.watchDir, recursive", slices.Contains(out.Watched, "create a.txt") && slices.Contains(out.Watched, "create sub") &&
		slices.Contains(out.Watched, "create sub/b.txt") && slices.Contains(out.Watched, "write sub/b.txt") && slices.Contains(out.Watched, "remove a.txt"), out.Watched)
	check("polled watchers: create, get events, remove", slices.Contains(out.Polled.Events, "c.txt:1") && out.Polled.GoneCode == 5, out.Polled)
	check("files.watchDir of a missing directory", failed(out.WatchMissing, "", "no-such-dir"), out.WatchMissing)
	check("a terminal: typed at, resized, exited", out.Pty.First && out.Pty.Tty && out.Pty.Resized && out.Pty.ExitCode == 7, out.Pty)
	check("commands.kill of a server", out.ServerKilled && out.ServerWait != nil && out.ServerWait.ExitCode == -1, []any{out.ServerKilled, out.ServerWait})
	check("several files at once", slices.Equal(out.Many, []string{"/work/m/one.txt", "/work/m/two.txt"}), out.Many)
	check("a streamed upload", out.Streamed == "from a stream", out.Streamed)
	check("files.getInfo", out.GetInfo.Name == "two.txt" && out.GetInfo.Type == "file" && out.GetInfo.Size == 2, out.GetInfo)
	check("files.list depth", slices.Equal(out.Deep, []string{"one.txt", "two.txt"}), out.Deep)
	check("setTimeout and getInfo", out.Info.TemplateID == "base" && out.Info.Metadata["purpose"] == "e2b-test" && out.Info.State == "running" &&
		out.Info.LifeLeftS >= 110 && out.Info.LifeLeftS <= 121, out.Info)
	check("Sandbox.list", slices.Contains(out.Listed, out.ID) && slices.Equal(out.ListedByMeta, []string{out.ID}) && out.ListedOtherMeta == 0, []any{out.Listed, out.ListedByMeta})
	check("Sandbox.connect", out.Connected == "200000", out.Connected)
	check("another account: getInfo", failed(out.OtherInfo, "SandboxNotFoundError", ""), out.OtherInfo)
	check("another account: connect", failed(out.OtherConnect, "SandboxNotFoundError", ""), out.OtherConnect)
	check("another account: kill and list", !out.OtherKill && len(out.OtherList) == 0, []any{out.OtherKill, out.OtherList})
	check("another template", failed(out.Template, "", "is not available"), out.Template)
	check("pause", failed(out.Pause, "", "not supported"), out.Pause)
	check("after kill", !out.RunningAfterKill && !out.KillAgain && failed(out.RunAfterKill, "SandboxNotFoundError", "not running") &&
		failed(out.ReadAfterKill, "TimeoutError", "not found") && failed(out.InfoAfterKill, "SandboxNotFoundError", ""),
		[]any{out.RunningAfterKill, out.KillAgain, out.RunAfterKill, out.ReadAfterKill, out.InfoAfterKill})
	check("past its timeout", !out.RunningPastTimeout && failed(out.RunPastTimeout, "SandboxNotFoundError", "not running"), []any{out.RunningPastTimeout, out.RunPastTimeout})
}

// runE2B runs an E2B SDK script against s, with the door's variables set
// for s's key (and env), and decodes the JSON it prints into out.
func runE2B(t *testing.T, s *devServer, script string, out any, env ...string) {
	t.Helper()
	start := time.Now()
	r := clients.Run(t, clients.Script{
		Node:   clients.SystemNode(t),
		Source: script,
		Env: append([]string{"E2B_API_URL=" + s.base + "/e2b", "E2B_SANDBOX_URL=" + s.base + "/e2b/sandbox",
			"E2B_API_KEY=" + s.key}, env...),
		Timeout: 3 * time.Minute,
	})
	t.Logf("the SDK's script ran in %v; its answers: %s", time.Since(start).Round(time.Millisecond), r.Stdout)
	if r.Err != nil {
		t.Fatalf("script: %v\nstdout: %s\nstderr: %s\nserver: %s", r.Err, r.Stdout, r.Stderr, s.logs())
	}
	if err := json.Unmarshal([]byte(r.Stdout), out); err != nil {
		t.Fatalf("the script's output: %v\n%s", err, r.Stdout)
	}
}

// e2bCheck returns a check of one answer, as a subtest of t.
func e2bCheck(t *testing.T) func(name string, ok bool, got any) {
	return func(name string, ok bool, got any) {
		t.Helper()
		t.Run(name, func(t *testing.T) {
			if !ok {
				b, _ := json.Marshal(got)
				t.Errorf("got %s", b)
			}
		})
	}
}

func toFloat(v any) float64 {
	f, _ := v.(float64)
	return f
}

// testStreamInput: envd's StreamInput, which the SDKs' fetch transports
// cannot send (a client stream), as a Connect client over HTTP/1.1 sends
// it: a start naming a running command by its tag, then its input.
func testStreamInput(t *testing.T, s *devServer) {
	code, sb := s.call(s.key, "POST", "/e2b/v2/sandboxes", `{"templateID":"base","timeout":60}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, sb)
	}
	id, token := sb["sandboxID"].(string), sb["envdAccessToken"].(string)
	defer s.call(s.key, "DELETE", "/e2b/sandboxes/"+id, "")
	envd := func(method string, body []byte) (int, []byte) {
		req, err := http.NewRequest("POST", s.base+"/e2b/sandbox/process.Process/"+method, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("E2b-Sandbox-Id", id)
		req.Header.Set("X-Access-Token", token)
		req.Header.Set("Connect-Protocol-Version", "1")
		req.Header.Set("Content-Type", "application/connect+json")
		if method == "CloseStdin" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	frames := func(msgs ...any) []byte {
		var b []byte
		for _, m := range msgs {
			j, _ := json.Marshal(m)
			b = append(b, 0, 0, 0, 0, 0)
			binary.BigEndian.PutUint32(b[len(b)-4:], uint32(len(j)))
			b = append(b, j...)
		}
		return b
	}
	started := make(chan soak.ProcessStream, 1)
	go func() {
		_, raw := envd("Start", frames(map[string]any{"process": map[string]any{"cmd": "/bin/bash", "args": []string{"-l", "-c", "cat; echo end"}}, "stdin": true, "tag": "fed"}))
		started <- soak.ReadProcessStream(raw)
	}()
	sel := map[string]any{"tag": "fed"}
	var code2 int
	var raw []byte
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		code2, raw = envd("StreamInput", frames(
			map[string]any{"start": map[string]any{"process": sel}},
			map[string]any{"data": map[string]any{"input": map[string]any{"stdin": base64.StdEncoding.EncodeToString([]byte("one "))}}},
			map[string]any{"keepalive": map[string]any{}},
			map[string]any{"data": map[string]any{"input": map[string]any{"stdin": base64.StdEncoding.EncodeToString([]byte("two\n"))}}},
		))
		if !bytes.Contains(raw, []byte("not_found")) {
			break // the command has started
		}
	}
	if code2 != http.StatusOK || bytes.Contains(raw, []byte(`"error"`)) {
		t.Fatalf("StreamInput: %d %s", code2, raw)
	}
	closeBody, _ := json.Marshal(map[string]any{"process": sel})
	if code, b := envd("CloseStdin", closeBody); code != http.StatusOK {
		t.Fatalf("CloseStdin: %d %s", code, b)
	}
	select {
	case r := <-started:
		if !r.Ended || r.ExitCode != 0 || r.Stdout != "one two\nend\n" {
			t.Errorf("the fed command: %+v", r)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the fed command never ended")
	}
}
