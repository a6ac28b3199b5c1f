package main_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/sandboxapi/sandboxapi/ops/clients"
)

// pistonClientScript drives a server with the npm piston-client (1.0.2),
// as its users call it: runtimes(), then execute() by language name with
// the client's own defaults (args ["1","2","3"], run_timeout 3000, memory
// -1), and with its options. It prints one JSON object of every answer.
const pistonClientScript = `
import { piston } from "piston-client";

const client = piston({ server: process.env.PISTON_SERVER });
const out = { runtimes: await client.runtimes(), runs: {} };
const programs = {
	python3: "import sys\nprint('python', sys.argv[1:], sys.stdin.read())",
	javascript: "console.log('javascript', process.argv.slice(2).join(','))",
	c: "#include <stdio.h>\nint main(int argc, char **argv) { printf(\"c %d %s\\n\", argc - 1, argv[1]); return 0; }",
	go: "package main\nimport (\"fmt\"; \"os\")\nfunc main() { fmt.Println(\"go\", len(os.Args)-1) }",
};
for (const [language, code] of Object.entries(programs)) {
	out.runs[language] = await client.execute(language, code, { stdin: "in" });
}
out.runs.options = await client.execute({
	language: "python3",
	files: [{ name: "main.py", content: "import helper\nhelper.hi()" }, { name: "helper.py", content: "ZGVmIGhpKCk6IHByaW50KCdoaSBmcm9tIGEgc2Vjb25kIGZpbGUnKQ==", encoding: "base64" }],
	args: [],
	runTimeout: 5000,
});
out.runs.exit = await client.execute("python3", "import sys; print('x'); sys.exit(3)");
out.runs.compileError = await client.execute("c", "int main( {");
out.runs.overPlan = await client.execute("python3", "print(1)", { runTimeout: 601000 });
out.runs.unknown = await client.execute("brainfuck", "+");
console.log(JSON.stringify(out));
`

type pistonStage struct {
	Stdout string  `json:"stdout"`
	Output string  `json:"output"`
	Code   *int    `json:"code"`
	Status *string `json:"status"`
}

type pistonAnswer struct {
	Language string       `json:"language"`
	Version  string       `json:"version"`
	Run      *pistonStage `json:"run"`
	Compile  *pistonStage `json:"compile"`
	Message  string       `json:"message"`
	Error    *struct {
		Code string `json:"code"`
	} `json:"error"`
}

// TestPistonClient: the npm piston-client, unchanged, against a dev
// server, with the API key as the URL's credentials (which the client
// passes on as HTTP Basic): its runtimes() lists our toolchains by
// Piston's names, and its execute() runs python3, javascript, c and go,
// files in two encodings, a failing exit, a compile error, and is refused
// above the plan in Piston's shape. A wrong key is refused by the
// gateway.
func TestPistonClient(t *testing.T) {
	s := startDev(t, t.TempDir())
	host := strings.TrimPrefix(s.base, "http://")
	start := time.Now()
	r := clients.Run(t, clients.Script{
		Node:    clients.SystemNode(t),
		Source:  pistonClientScript,
		Env:     []string{"PISTON_SERVER=http://apikey:" + s.key + "@" + host},
		Timeout: 3 * time.Minute,
	})
	t.Logf("piston-client ran in %v; its answers: %s", time.Since(start).Round(time.Millisecond), r.Stdout)
	if r.Err != nil {
		t.Fatalf("piston-client: %v\nstdout: %s\nstderr: %s", r.Err, r.Stdout, r.Stderr)
	}
	var out struct {
		Runtimes []struct {
			Language string   `json:"language"`
			Version  string   `json:"version"`
			Aliases  []string `json:"aliases"`
		} `json:"runtimes"`
		Runs map[string]pistonAnswer `json:"runs"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		t.Fatalf("piston-client's output: %v\n%s", err, r.Stdout)
	}

	t.Run("runtimes", func(t *testing.T) {
		byName := map[string]string{}
		for _, rt := range out.Runtimes {
			byName[rt.Language] = rt.Version
		}
		for _, name := range []string{"python", "javascript", "c", "go"} {
			if v := byName[name]; strings.Count(v, ".") != 2 {
				t.Errorf("runtime %s has version %q, want major.minor.patch (runtimes %+v)", name, v, out.Runtimes)
			}
		}
	})
	ok := func(name, language, stdout string) {
		t.Run(name, func(t *testing.T) {
			a := out.Runs[name]
			if a.Language != language || a.Run == nil || a.Run.Stdout != stdout || a.Run.Code == nil || *a.Run.Code != 0 || a.Run.Status != nil {
				b, _ := json.Marshal(a)
				t.Errorf("answer %s, want %s printing %q with code 0", b, language, stdout)
			}
		})
	}
	ok("python3", "python", "python ['1', '2', '3'] in\n")
	ok("javascript", "javascript", "javascript 1,2,3\n")
	ok("c", "c", "c 3 1\n")
	ok("go", "go", "go 3\n")
	ok("options", "python", "hi from a second file\n")
	t.Run("compiled languages have a compile stage", func(t *testing.T) {
		for _, name := range []string{"c", "go"} {
			if c := out.Runs[name].Compile; c == nil || c.Code == nil || *c.Code != 0 {
				t.Errorf("%s: compile stage %+v", name, c)
			}
		}
	})
	t.Run("exit", func(t *testing.T) {
		a := out.Runs["exit"]
		if a.Run == nil || a.Run.Code == nil || *a.Run.Code != 3 || a.Run.Status == nil || *a.Run.Status != "RE" || a.Run.Stdout != "x\n" {
			t.Errorf("answer %+v, want code 3, status RE", a.Run)
		}
	})
	t.Run("compile error", func(t *testing.T) {
		a := out.Runs["compileError"]
		if a.Run != nil || a.Compile == nil || a.Compile.Code == nil || *a.Compile.Code == 0 || !strings.Contains(a.Compile.Output, "error") {
			t.Errorf("answer %+v %+v, want a failed compile stage and no run", a.Compile, a.Run)
		}
	})
	t.Run("over the plan", func(t *testing.T) {
		if m := out.Runs["overPlan"].Message; !strings.Contains(m, "run_timeout cannot exceed the configured limit of 600000") {
			t.Errorf("message %q", m)
		}
	})
	t.Run("unknown runtime", func(t *testing.T) {
		if m := out.Runs["unknown"].Message; m != "brainfuck- runtime is unknown" {
			t.Errorf("message %q", m)
		}
	})

	t.Run("a wrong key", func(t *testing.T) {
		r := clients.Run(t, clients.Script{
			Node:   clients.SystemNode(t),
			Source: `import { piston } from "piston-client"; console.log(JSON.stringify(await piston({ server: process.env.PISTON_SERVER }).runtimes()));`,
			Env:    []string{"PISTON_SERVER=http://apikey:sk_wrong@" + host},
		})
		if r.Err != nil || !strings.Contains(r.Stdout, `"invalid_api_key"`) {
			t.Errorf("runtimes with a wrong key: %v %s %s", r.Err, r.Stdout, r.Stderr)
		}
	})
}
