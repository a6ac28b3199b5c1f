package main_test

import (
	"bytes"
	"encoding/base64"
	"image/png"
	"strings"
	"testing"
)

// codeInterpreterScript drives @e2b/code-interpreter against the door.
const codeInterpreterScript = `
import { Sandbox } from "@e2b/code-interpreter";

const out = { ms: {} };
let mark = performance.now();
const lap = (name) => { const now = performance.now(); out.ms[name] = Math.round(now - mark); mark = now; };
const fail = (e) => ({ name: e?.name, message: String(e?.message ?? e) });
let t = performance.now();
const sbx = await Sandbox.create();
out.createMs = performance.now() - t;
t = performance.now();
await sbx.runCode("x = 21");
out.firstRunMs = performance.now() - t;
out.answer = (await sbx.runCode("x * 2")).text;
const streamed = [];
const printed = await sbx.runCode("print('a'); print('b')", { onStdout: (m) => streamed.push(m.line) });
out.printed = { stdout: printed.logs.stdout.join(""), streamed: streamed.join("") };
const err = await sbx.runCode("1 / 0");
out.error = err.error ? { name: err.error.name, value: err.error.value, traceback: err.error.traceback } : null;
const plot = await sbx.runCode("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()");
lap("untilPlot");
out.png = plot.results.find((r) => r.png)?.png ?? null;
out.plotError = plot.error ? plot.error.value : null;
const js = await sbx.runCode("const y = 20; y + 22", { language: "javascript" });
out.js = js.text;
out.jsAgain = (await sbx.runCode("y * 2", { language: "js" })).text;
lap("javascript");
// envs hold for their cell only.
out.envs = (await sbx.runCode("import os; os.environ.get('CELL_VAR', 'unset')", { envs: { CELL_VAR: "for this cell" } })).text;
out.envsAfter = (await sbx.runCode("os.environ.get('CELL_VAR', 'unset')")).text;
out.jsEnvs = (await sbx.runCode("process.env.CELL_VAR", { language: "javascript", envs: { CELL_VAR: "js" } })).text;
const ctx = await sbx.createCodeContext({ language: "python" });
await sbx.runCode("x = 1", { context: ctx });
out.inContext = (await sbx.runCode("x", { context: ctx })).text;
out.outside = (await sbx.runCode("x")).text;
out.contexts = (await sbx.listCodeContexts()).map((c) => c.id).includes(ctx.id);
await sbx.removeCodeContext(ctx);
out.contextsAfter = (await sbx.listCodeContexts()).map((c) => c.id).includes(ctx.id);
lap("contexts");
await sbx.kill();
lap("kill");
try { await sbx.runCode("1"); out.afterKill = null; } catch (e) { out.afterKill = fail(e); }
lap("afterKill");
// The SDK's keep-alive fetches would hold node open for a minute more.
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
`

// testCodeInterpreter (a part of TestE2BClient, on its dev server):
// @e2b/code-interpreter, unchanged: state persists between cells, the last expression is the
// result's text, an exception comes back as error with its traceback, a
// matplotlib figure as a PNG that decodes, JavaScript and new contexts
// keep their own state.
func testCodeInterpreter(t *testing.T, s *devServer) {
	var out struct {
		CreateMs, FirstRunMs float64
		Ms                   map[string]int
		Answer               string
		Printed              struct{ Stdout, Streamed string }
		Error                *struct{ Name, Value, Traceback string }
		PNG                  *string
		PlotError            *string
		JS, JSAgain          string
		Envs, EnvsAfter      string
		JSEnvs               string
		InContext, Outside   string
		Contexts             bool
		ContextsAfter        bool
		AfterKill            *e2bFailure
	}
	runE2B(t, s, codeInterpreterScript, &out)
	t.Logf("Sandbox.create() %.0f ms, first runCode %.0f ms; steps %v ms", out.CreateMs, out.FirstRunMs, out.Ms)
	check := e2bCheck(t)
	check("state persists; the last expression is the text", out.Answer == "42", out.Answer)
	check("stdout", out.Printed.Stdout == "a\nb\n" && out.Printed.Streamed == "a\nb\n", out.Printed)
	check("an exception", out.Error != nil && out.Error.Name == "ZeroDivisionError" && strings.Contains(out.Error.Value, "division by zero") &&
		strings.Contains(out.Error.Traceback, "ZeroDivisionError"), out.Error)
	t.Run("a matplotlib figure is a PNG", func(t *testing.T) {
		if out.PNG == nil {
			t.Fatalf("no png; error %v", out.PlotError)
		}
		raw, err := base64.StdEncoding.DecodeString(*out.PNG)
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(bytes.NewReader(raw))
		if err != nil || img.Bounds().Dx() < 100 {
			t.Fatalf("png: %v %v", err, img)
		}
	})
	check("javascript keeps its state", out.JS == "42" && out.JSAgain == "40", []string{out.JS, out.JSAgain})
	check("envs hold for their cell", out.Envs == "'for this cell'" && out.EnvsAfter == "'unset'" && out.JSEnvs == "'js'", []string{out.Envs, out.EnvsAfter, out.JSEnvs})
	check("a context has its own globals", out.InContext == "1" && out.Outside == "21", []string{out.InContext, out.Outside})
	check("contexts listed, then removed", out.Contexts && !out.ContextsAfter, []bool{out.Contexts, out.ContextsAfter})
	check("after kill", out.AfterKill != nil && out.AfterKill.Name == "TimeoutError", out.AfterKill)
}
