package pkgcache

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// needRuby skips unless the host has the Ruby and gem GemsFromDebian and
// the sandbox's installer use.
func needRuby(t *testing.T) {
	t.Helper()
	for _, f := range []string{DebGemRuby, "/usr/bin/gem"} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("no %s (apt-get install ruby)", f)
		}
	}
}

// writeTree writes files (path in the tree => content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		f := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// runGemEnv runs name args in dir with GEM_HOME and GEM_PATH home, as the
// sandbox's installer and Ruby driver do.
func runGemEnv(t *testing.T, dir, home string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(debGemEnv(), "GEM_HOME="+home, "GEM_PATH="+home, "HOME="+t.TempDir())
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// installGems installs names from dir as command.go's gem installer does.
func installGems(t *testing.T, dir, home string, names ...string) {
	t.Helper()
	runGemEnv(t, dir, home, "/usr/bin/gem", append([]string{"install", "--local", "--no-document",
		"--install-dir", home, "--bindir", filepath.Join(home, "bin")}, names...)...)
}

// checkAddGem checks the builder accepts every gem made.
func checkAddGem(t *testing.T, gems []DebGem) {
	t.Helper()
	b, err := NewBuilder(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for _, g := range gems {
		if g.Err != nil {
			continue
		}
		a, err := b.AddGem(g.File, AddOptions{Tier: TierTop1k})
		if err != nil {
			t.Errorf("AddGem %s: %v", filepath.Base(g.File), err)
			continue
		}
		if a.Name != g.Name || a.Version != g.Version {
			t.Errorf("AddGem %s: added %s %s, want %s %s", filepath.Base(g.File), a.Name, a.Version, g.Name, g.Version)
		}
	}
}

const pureSpecDir = "usr/share/rubygems-integration/all/specifications/"

// gemspecText is a gemspec as Debian's dh-ruby writes them.
func gemspecText(name, version string, files []string, extra string) string {
	var quoted []string
	for _, f := range files {
		quoted = append(quoted, `"`+f+`".freeze`)
	}
	return `# -*- encoding: utf-8 -*-
Gem::Specification.new do |s|
  s.name = "` + name + `".freeze
  s.version = "` + version + `"
  s.require_paths = ["lib".freeze]
  s.authors = ["A. Author".freeze]
  s.date = "2023-01-02"
  s.summary = "A test gem.".freeze
  s.files = [` + strings.Join(quoted, ", ") + `]
` + extra + `
end
`
}

func TestGemsFromDebianSynthetic(t *testing.T) {
	needRuby(t)
	type want struct {
		file    string // base name; "" for a gemspec that fails
		dropped []string
		notes   int
	}
	cases := []struct {
		name    string
		trees   map[string]map[string]string // package => files
		want    map[string]want              // gem => what it gives
		install []string
		script  string
		output  string
	}{
		{
			name: "vendor_ruby library",
			trees: map[string]map[string]string{
				"ruby-hello": {
					pureSpecDir + "hello-1.2.3.gemspec": gemspecText("hello", "1.2.3", []string{"lib/hello.rb", "lib/hello/version.rb", "bin/hello", "README.md"},
						`  s.executables = ["hello".freeze]
  s.add_runtime_dependency(%q<not-in-debian>.freeze, [">= 1"])
  s.add_runtime_dependency(%q<racc>.freeze, [">= 1.4"])
  s.add_development_dependency(%q<rake>.freeze, [">= 0"])`),
					"usr/lib/ruby/vendor_ruby/hello.rb":         "require \"hello/version\"\nmodule Hello; def self.hi; \"hi \" + VERSION; end; end\n",
					"usr/lib/ruby/vendor_ruby/hello/version.rb": "module Hello; VERSION = \"1.2.3\"; end\n",
					"usr/share/doc/ruby-hello/copyright":        "x\n",
				},
			},
			// racc is a default gem of Ruby 3.1, which gem install
			// --install-dir does not count: the dependency goes too.
			want: map[string]want{"hello": {file: "hello-1.2.3.gem", notes: 1,
				dropped: []string{"not-in-debian (>= 1): no package", "racc (>= 1.4): Ruby's default gem racc"}}},
			install: []string{"hello"},
			script:  `require "hello"; puts Hello.hi; puts Gem.loaded_specs["hello"].full_gem_path.start_with?(ENV["GEM_HOME"]); puts Gem.loaded_specs["hello"].dependencies.size`,
			output:  "hi 1.2.3\ntrue\n0\n",
		},
		{
			name: "gem directory and a dependency from the input",
			trees: map[string]map[string]string{
				"ruby-base": {
					pureSpecDir + "base-0.1.0.gemspec":                               gemspecText("base", "0.1.0", []string{"lib/base.rb"}, ""),
					"usr/share/rubygems-integration/all/gems/base-0.1.0/lib/base.rb": "module Base; N = 41; end\n",
				},
				"ruby-top": {
					pureSpecDir + "top-2.0.gemspec": gemspecText("top", "2.0", []string{"lib/top.rb", "exe/top"},
						`  s.bindir = "exe".freeze
  s.executables = ["top".freeze]
  s.add_runtime_dependency(%q<base>.freeze, ["~> 0.1"])`),
					"usr/share/rubygems-integration/all/gems/top-2.0/lib/top.rb": "require \"base\"\nmodule Top; N = Base::N + 1; end\n",
					"usr/bin/top": "#!/usr/bin/ruby\nrequire \"top\"\nputs Top::N\n",
				},
				"ruby-top-doc": {"usr/share/doc/ruby-top-doc/index.html": "<p>\n"},
			},
			want:    map[string]want{"base": {file: "base-0.1.0.gem"}, "top": {file: "top-2.0.gem"}},
			install: []string{"top"},
			script:  `require "top"; puts Top::N; puts (Gem.loaded_specs.keys & %w[base top]).sort.join(","); puts File.executable?(File.join(ENV["GEM_HOME"], "bin", "top"))`,
			output:  "42\nbase,top\ntrue\n",
		},
		{
			name: "a gemspec that fails alone",
			trees: map[string]map[string]string{
				"ruby-broken": {pureSpecDir + "broken-1.0.gemspec": "raise \"no\"\n"},
				"ruby-ok": {
					pureSpecDir + "ok-1.0.gemspec":   gemspecText("ok", "1.0", []string{"lib/ok.rb"}, ""),
					"usr/lib/ruby/vendor_ruby/ok.rb": "OK = 1\n",
				},
				"ruby-nolib": {pureSpecDir + "nolib-1.0.gemspec": gemspecText("nolib", "1.0", []string{"lib/nolib.rb"}, "")},
			},
			want:    map[string]want{"": {}, "nolib": {}, "ok": {file: "ok-1.0.gem"}},
			install: []string{"ok"},
			script:  `require "ok"; puts OK`,
			output:  "1\n",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			var trees []DebTree
			for _, pkg := range slicesSortedKeys(c.trees) {
				root := filepath.Join(dir, "trees", pkg)
				writeTree(t, root, c.trees[pkg])
				trees = append(trees, DebTree{Package: pkg, Version: "1-1", Architecture: "all", Root: root})
			}
			out := filepath.Join(dir, "out")
			gems, err := GemsFromDebian(context.Background(), trees, out)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]DebGem{}
			for _, g := range gems {
				got[g.Name] = g
			}
			if len(got) != len(c.want) {
				t.Errorf("gems %v, want %v", slicesSortedKeys(got), slicesSortedKeys(c.want))
			}
			for name, w := range c.want {
				g, ok := got[name]
				switch {
				case !ok:
					t.Errorf("no gem %q", name)
				case w.file == "" && g.Err == nil:
					t.Errorf("%q: made %s, want an error", name, g.File)
				case w.file != "" && g.Err != nil:
					t.Errorf("%q: %v", name, g.Err)
				case w.file != "" && (filepath.Base(g.File) != w.file || filepath.Dir(g.File) != out):
					t.Errorf("%q: file %s, want %s in %s", name, g.File, w.file, out)
				case w.file != "" && (g.Platform != "ruby" || g.Native || g.Debian == ""):
					t.Errorf("%q: platform %q native %v debian %q", name, g.Platform, g.Native, g.Debian)
				}
				if w.file != "" {
					if len(g.Dropped) != len(w.dropped) {
						t.Errorf("%q: dropped %q, want %q", name, g.Dropped, w.dropped)
					}
					for i := range min(len(g.Dropped), len(w.dropped)) {
						if !strings.HasPrefix(g.Dropped[i], w.dropped[i]) {
							t.Errorf("%q: dropped %q, want %q", name, g.Dropped, w.dropped)
						}
					}
					if len(g.Notes) != w.notes {
						t.Errorf("%q: notes %q, want %d", name, g.Notes, w.notes)
					}
				}
			}
			checkAddGem(t, gems)

			// The same trees give the same bytes.
			again, err := GemsFromDebian(context.Background(), trees, filepath.Join(dir, "again"))
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range again {
				if g.Err != nil {
					continue
				}
				a, _ := os.ReadFile(g.File)
				b, _ := os.ReadFile(filepath.Join(out, filepath.Base(g.File)))
				if !bytes.Equal(a, b) {
					t.Errorf("%s differs between two runs", filepath.Base(g.File))
				}
			}

			home := filepath.Join(dir, "home")
			installGems(t, out, home, c.install...)
			if got := runGemEnv(t, dir, home, DebGemRuby, "-e", c.script); got != c.output {
				t.Errorf("ruby printed %q, want %q", got, c.output)
			}
		})
	}
}

func slicesSortedKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestGemsFromDebianApt makes gems of Debian's ruby-nokogiri and
// ruby-json closure with the host's apt and installs them as the sandbox
// does.
func TestGemsFromDebianApt(t *testing.T) {
	needRuby(t)
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get")
	}
	if testing.Short() {
		t.Skip("downloads Debian packages")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	d := &Debian{}
	closure, err := d.Closure(ctx, []string{"ruby-nokogiri", "ruby-json"})
	if err != nil {
		t.Skipf("apt cannot resolve ruby-nokogiri: %v", err)
	}
	var pkgs []DebPackage
	for _, p := range closure {
		if strings.HasPrefix(p.Package, "ruby-") && p.Package != "ruby-rubygems" {
			pkgs = append(pkgs, p)
		}
	}
	dir := t.TempDir()
	trees, err := d.Fetch(ctx, pkgs, dir)
	if err != nil {
		t.Skipf("apt cannot fetch: %v", err)
	}
	fetched := time.Since(start)
	out := filepath.Join(dir, "out")
	gems, err := GemsFromDebian(ctx, trees, out)
	if err != nil {
		t.Fatal(err)
	}
	made := time.Since(start) - fetched
	byName := map[string]DebGem{}
	for _, g := range gems {
		if g.Err != nil {
			t.Errorf("%s: %v", g.Debian, g.Err)
			continue
		}
		byName[g.Name] = g
		t.Logf("%s: %s native=%v dropped=%q notes=%q", g.Debian, filepath.Base(g.File), g.Native, g.Dropped, g.Notes)
	}
	cases := []struct{ name, pkg string }{
		{"nokogiri", "ruby-nokogiri"},
		{"json", "ruby-json"},
		{"mini_portile2", "ruby-mini-portile2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g, ok := byName[c.name]
			if !ok {
				t.Fatalf("no gem %s", c.name)
			}
			if g.Debian != c.pkg {
				t.Errorf("from %s, want %s", g.Debian, c.pkg)
			}
			if c.name != "mini_portile2" && !g.Native {
				t.Errorf("%s: not native", c.name)
			}
		})
	}
	checkAddGem(t, gems)

	home := filepath.Join(dir, "home")
	t.Run("install and load", func(t *testing.T) {
		installGems(t, out, home, "nokogiri", "json")
		got := runGemEnv(t, dir, home, DebGemRuby, "-e", `require "nokogiri"; require "json"
puts Nokogiri::XML("<a>1</a>").root.text
puts Gem.loaded_specs["nokogiri"].full_gem_path
puts JSON.generate({"a" => [1]}), JSON.parse("[2]").first, JSON::Parser.name`)
		lines := strings.Split(strings.TrimSpace(got), "\n")
		if len(lines) != 5 || lines[0] != "1" || !strings.HasPrefix(lines[1], home+"/") ||
			lines[2] != `{"a":[1]}` || lines[3] != "2" || lines[4] != "JSON::Ext::Parser" {
			t.Errorf("ruby printed %q; want nokogiri loaded from %s and json's extension", got, home)
		}
	})
	t.Logf("fetch %s, gems %s, total %s", fetched.Round(time.Millisecond), made.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}
