package pkgcache

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// DebGem is a .gem made from a Debian package.
type DebGem struct {
	// File is the .gem (named as gem install --local looks for it);
	// empty when Err is set.
	File, Name, Version string
	// Platform is always "ruby", even for a gem with prebuilt
	// extensions (Native): the RubyGems of Debian 12 (3.3.15) cannot
	// install a platform gem by name from a local directory
	// (rubygems#5780, fixed in 3.3.20), which is how the sandbox installs.
	// A native gem instead requires the minor version of the Ruby it was
	// built for (">= 3.1, < 3.2.dev") and records Debian's architecture in
	// its metadata ("debian_architecture").
	Platform string
	// Debian is the package it came from.
	Debian string
	// Native says the gem holds prebuilt extensions (.so files under
	// lib, where the gem's own loader requires them).
	Native bool
	// Dropped are the runtime dependencies left out because no gem of
	// the input satisfies them, with why, e.g. "racc (~> 1.4): Ruby's
	// default gem racc 1.6.0 provides it" (gem install --install-dir
	// does not count default gems, so the dependency cannot stay).
	Dropped []string
	// Notes are other changes: executables left out, validation skipped.
	Notes []string
	// Err says why this gemspec gave no gem; the others are unaffected.
	Err error
}

// DebGemRuby is the Ruby GemsFromDebian runs: its RubyGems builds the
// gems, and its version is the one native gems are made for.
var DebGemRuby = "/usr/bin/ruby"

// debGemChunk is how many trees one Ruby process builds, each process
// under debGemTimeout.
const (
	debGemChunk   = 50
	debGemTimeout = 5 * time.Minute
)

// GemsFromDebian turns the gemspecs of Debian ruby-* packages (unpacked
// trees, as Fetch makes them) into .gem files in outDir, which gem
// install --local --no-document --install-dir installs offline with the
// host's Ruby, dependencies resolved from outDir.
//
// Debian installs a gem's specification under
// usr/share/rubygems-integration/all (pure) or
// usr/lib/TRIPLET/rubygems-integration/RUBY_API (native), its gem
// directory and prebuilt extensions beside it, and often the library
// itself under usr/lib/ruby/vendor_ruby (and
// usr/lib/TRIPLET/ruby/vendor_ruby/RUBY_API). Each gem gets its gem
// directory, its extensions' files under its first require path (lib),
// and the vendor_ruby files its file list names under the require path
// that names them (all of the tree's vendor_ruby files when the tree has
// only the one gemspec); its file list becomes exactly those files. Its
// extensions are cleared (they are built), executables Debian does not
// ship are left out, development dependencies are removed, and runtime
// dependencies nothing installable satisfies are dropped (DebGem.Dropped).
// Gems are built with SOURCE_DATE_EPOCH from the spec's date, so the same
// trees give the same files.
//
// Trees without a gemspec for the host's Ruby give nothing. A gemspec
// that fails gives a DebGem with Err; err is only for failures of the
// whole run (no Ruby, Ruby crashing or timing out). When two trees hold
// the same gem version, the first one's is made.
func GemsFromDebian(ctx context.Context, trees []DebTree, outDir string) ([]DebGem, error) {
	if len(trees) == 0 {
		return nil, nil
	}
	ruby := DebGemRuby
	if _, err := os.Stat(ruby); err != nil {
		if ruby, err = exec.LookPath("ruby"); err != nil {
			return nil, fmt.Errorf("pkgcache: gems from Debian need Ruby (%s): %w", DebGemRuby, err)
		}
	}
	outDir, err := filepath.Abs(outDir)
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	tmp, err := os.MkdirTemp("", "sandboxapi-debgem-")
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "debgem.rb")
	if err := os.WriteFile(script, []byte(debGemScript), 0o644); err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	type tree struct {
		Package      string `json:"package"`
		Version      string `json:"version"`
		Architecture string `json:"architecture"`
		Root         string `json:"root"`
	}
	in := make([]tree, len(trees))
	byPackage := map[string]DebTree{}
	for i, t := range trees {
		root, err := filepath.Abs(t.Root)
		if err != nil {
			return nil, fmt.Errorf("pkgcache: %w", err)
		}
		in[i] = tree{t.Package, t.Version, t.Architecture, root}
		byPackage[t.Package] = t
	}

	// Every gem the input provides, so dependencies on them are kept.
	type scanned struct {
		Package string `json:"package"`
		Spec    string `json:"spec"`
		Name    string `json:"name"`
		Version string `json:"version"`
		Error   string `json:"error"`
	}
	var scan []scanned
	if err := runDebGem(ctx, ruby, script, map[string]any{"mode": "scan", "trees": in}, &scan); err != nil {
		return nil, err
	}
	var gems []DebGem
	type nv struct{ name, version string }
	seen := map[nv]bool{}
	provided := []map[string]string{}
	skip := []string{}
	for _, s := range scan {
		if s.Error != "" {
			gems = append(gems, DebGem{Debian: s.Package, Platform: "ruby",
				Err: fmt.Errorf("%w: %s: %s: %s", ErrBadPackage, s.Package, filepath.Base(s.Spec), s.Error)})
			continue
		}
		k := nv{s.Name, s.Version}
		if seen[k] {
			skip = append(skip, s.Spec)
			continue
		}
		seen[k] = true
		provided = append(provided, map[string]string{"name": s.Name, "version": s.Version})
	}

	type built struct {
		Package  string   `json:"package"`
		Spec     string   `json:"spec"`
		Name     string   `json:"name"`
		Version  string   `json:"version"`
		Platform string   `json:"platform"`
		File     string   `json:"file"`
		Native   bool     `json:"native"`
		Dropped  []string `json:"dropped"`
		Notes    []string `json:"notes"`
		Error    string   `json:"error"`
	}
	for i := 0; i < len(in); i += debGemChunk {
		chunk := in[i:min(len(in), i+debGemChunk)]
		var res []built
		req := map[string]any{"mode": "build", "trees": chunk, "provided": provided, "skip": skip,
			"out": outDir, "stage": filepath.Join(tmp, "stage")}
		if err := runDebGem(ctx, ruby, script, req, &res); err != nil {
			return nil, err
		}
		for _, r := range res {
			g := DebGem{Name: r.Name, Version: r.Version, Platform: r.Platform, Debian: r.Package,
				Native: r.Native, Dropped: r.Dropped, Notes: r.Notes}
			if g.Platform == "" {
				g.Platform = "ruby"
			}
			if r.Error != "" {
				what := r.Name + " " + r.Version
				if r.Name == "" {
					what = filepath.Base(r.Spec)
				}
				g.Err = fmt.Errorf("%w: %s: gem %s: %s", ErrBadPackage, r.Package, strings.TrimSpace(what), r.Error)
			} else {
				g.File = r.File
			}
			gems = append(gems, g)
		}
	}
	sort.SliceStable(gems, func(i, j int) bool {
		if gems[i].Name != gems[j].Name {
			return gems[i].Name < gems[j].Name
		}
		return gems[i].Version < gems[j].Version
	})
	return gems, nil
}

// runDebGem runs the script on req (JSON on stdin) and decodes its
// stdout into out.
func runDebGem(ctx context.Context, ruby, script string, req any, out any) error {
	input, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, debGemTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ruby, script)
	cmd.Stdin = bytes.NewReader(input)
	cmd.Env = debGemEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ctx.Err() == context.DeadlineExceeded {
		return fmt.Errorf("pkgcache: gems from Debian: %s did not finish within %s", ruby, debGemTimeout)
	}
	if err == nil {
		err = json.Unmarshal(stdout.Bytes(), out)
	}
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = msg[len(msg)-2000:]
		}
		return fmt.Errorf("pkgcache: gems from Debian: %s: %w: %s", ruby, err, msg)
	}
	return nil
}

// debGemEnv is the environment without what would point the build's
// RubyGems elsewhere; SOURCE_DATE_EPOCH is the script's to set.
func debGemEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GEM_HOME", "GEM_PATH", "GEM_SPEC_CACHE", "RUBYOPT", "RUBYLIB", "BUNDLE_GEMFILE", "BUNDLER_SETUP",
			"SOURCE_DATE_EPOCH", "LC_ALL", "LANG":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C.UTF-8")
}

// debGemScript does the work in the host's Ruby: its RubyGems loads
// Debian's gemspecs and builds the gems.
const debGemScript = `# Turns the gemspecs of unpacked Debian ruby-* packages into .gem files.
# Input (stdin, JSON): {"mode": "scan"|"build", "trees": [{"package", "root"}],
# "provided": [{"name", "version", "platform"}], "out": DIR, "stage": DIR}.
# Output (stdout, JSON): scan: [{"package", "spec", "name", "version"}];
# build: [{"package", "spec", "name", "version", "platform", "file",
# "dropped", "notes", "error"}].
require "json"
require "fileutils"
require "rubygems"
require "rubygems/package"
require "rubygems/user_interaction"

Gem::DefaultUserInteraction.ui = Gem::SilentUI.new

RUBY_API = RbConfig::CONFIG["ruby_version"] # "3.1.0"
ARCH_DIRS = [RbConfig::CONFIG["arch"], RbConfig::CONFIG["MULTIARCH"]].compact.uniq

# The gemspecs a tree holds for this Ruby: pure ones under
# usr/share/rubygems-integration/{all,API}, native ones under
# usr/lib/TRIPLET/rubygems-integration/API.
def gemspecs(root)
  pats = ["usr/share/rubygems-integration/all/specifications/*.gemspec",
          "usr/share/rubygems-integration/#{RUBY_API}/specifications/*.gemspec",
          "usr/lib/*/rubygems-integration/#{RUBY_API}/specifications/*.gemspec"]
  pats.flat_map { |p| Dir.glob(File.join(root, p)) }.sort
end

def load_spec(path)
  spec = Gem::Specification.load(path)
  raise "cannot load #{path}" unless spec
  spec
end

# The regular files under dir (relative paths => absolute source),
# following symlinks that stay inside root (absolute targets are read
# as root-relative, as dpkg would install them).
def walk(root, dir, rel = "", out = {}, depth = 0)
  return out if depth > 40
  Dir.children(dir).sort.each do |name|
    src = File.join(dir, name)
    r = rel.empty? ? name : File.join(rel, name)
    real = resolve(root, src)
    next unless real
    if File.directory?(real)
      walk(root, real, r, out, depth + 1)
    elsif File.file?(real)
      out[r] = real
    end
  end
  out
end

# resolve follows src's symlinks, absolute ones taken inside root; nil
# when the chain leaves root or dangles.
def resolve(root, src)
  root = File.expand_path(root)
  cur = src
  20.times do
    return cur unless File.symlink?(cur)
    target = File.readlink(cur)
    cur = target.start_with?("/") ? File.join(root, target) : File.expand_path(target, File.dirname(cur))
    return nil unless File.expand_path(cur).start_with?(root + "/")
  end
  nil
end

# Only the result goes to stdout: whatever a gemspec or RubyGems prints
# goes to stderr.
OUT = STDOUT.dup
STDOUT.reopen(STDERR)

# The tree's files outside the places gems are read from, by base name:
# {name => {path under root => source}}.
def other_files(root)
  out = Hash.new { |h, k| h[k] = {} }
  skip = %w[usr/share/doc usr/share/doc-base usr/share/man usr/share/info usr/share/lintian
            usr/share/rubygems-integration usr/lib/ruby usr/bin usr/sbin]
  walk(root, root).each do |rel, src|
    next if skip.any? { |d| rel == d || rel.start_with?(d + "/") }
    next if rel.include?("/rubygems-integration/") || rel.include?("/ruby/vendor_ruby/")
    out[File.basename(rel)][rel] = src
  end
  out
end

def write_json(obj)
  OUT.write(JSON.generate(obj))
  OUT.flush
end

input = JSON.parse($stdin.read)
trees = input.fetch("trees")

if input["mode"] == "scan"
  out = []
  trees.each do |t|
    gemspecs(t["root"]).each do |path|
      begin
        spec = load_spec(path)
        out << { "package" => t["package"], "spec" => path, "name" => spec.name, "version" => spec.version.to_s }
      rescue StandardError, ScriptError => e
        out << { "package" => t["package"], "spec" => path, "error" => "#{e.class}: #{e.message}" }
      end
    end
  end
  write_json(out)
  exit 0
end

skip = input.fetch("skip", []).to_h { |p| [p, true] }
provided = Hash.new { |h, k| h[k] = [] }
input.fetch("provided").each { |p| provided[p["name"]] << Gem::Version.new(p["version"]) }
defaults = Hash.new { |h, k| h[k] = [] }
Gem::Specification.default_stubs("*.gemspec").each { |s| defaults[s.name] << s.version }

out_dir = input.fetch("out")
stage_base = input.fetch("stage")
results = []

trees.each do |t|
  root = File.expand_path(t["root"])
  paths = gemspecs(root)
  # Libraries Debian moved out of the gem directory, into the load path
  # of every Ruby: given to a gem whose file list names them, or to the
  # tree's only gem.
  vendor = {}
  vr = File.join(root, "usr/lib/ruby/vendor_ruby")
  if File.directory?(vr)
    walk(root, vr).each { |r, s| vendor[r] = s unless r.start_with?("#{RUBY_API}/") }
  end
  Dir.glob(File.join(root, "usr/lib/*/ruby/vendor_ruby/#{RUBY_API}")).sort.each do |d|
    walk(root, d).each { |r, s| vendor[r] ||= s }
  end
  if File.directory?(File.join(vr, RUBY_API))
    walk(root, File.join(vr, RUBY_API)).each { |r, s| vendor[r] ||= s }
  end
  claimed = {}
  others = nil

  paths.each do |path|
    next if skip[path]
    res = { "package" => t["package"], "spec" => path, "dropped" => [], "notes" => [] }
    results << res
    begin
      spec = load_spec(path)
      res["name"] = spec.name
      res["version"] = spec.version.to_s
      specdir = File.dirname(path)
      base = File.dirname(specdir)
      lib = (spec.raw_require_paths.first || "lib").to_s
      files = {} # path in the gem => source

      # The gem directory, as Debian installed it.
      gemdir = File.join(base, "gems", spec.full_name)
      walk(root, gemdir).each { |r, s| files[r] = s } if File.directory?(gemdir)

      # Prebuilt extensions: the extension directory is on the load
      # path like lib, so its files go under lib.
      Dir.glob(File.join(base, "extensions", "*", RUBY_API, spec.full_name)).sort.each do |ed|
        walk(root, ed).each do |r, s|
          next if %w[gem.build_complete mkmf.log gem_make.out].include?(File.basename(r))
          files[File.join(lib, r)] ||= s
        end
      end

      # vendor_ruby files the spec names (under one of its require paths).
      listed = spec.files.to_a
      spec.raw_require_paths.each do |rp|
        prefix = rp.to_s + "/"
        listed.each do |f|
          next unless f.start_with?(prefix)
          r = f.delete_prefix(prefix)
          next unless vendor[r]
          files[f] ||= vendor[r]
          claimed[r] = true
        end
      end
      if paths.size == 1
        vendor.each do |r, s|
          next if claimed[r]
          files[File.join(lib, r)] ||= s
          claimed[r] = true
        end
      end

      # Listed files Debian moved elsewhere in the package (data files
      # under usr/share/PACKAGE, say): the tree's file with the same name
      # whose path shares the longest tail with the listed one, if only
      # one does.
      missing = listed.reject { |f| files[f] || f.start_with?("#{spec.bindir || "bin"}/") || f.end_with?(".gemspec") }
      unless missing.empty?
        others ||= other_files(root)
        moved = Hash.new(0)
        missing.each do |f|
          cands = others[File.basename(f)] or next
          parts = f.split("/")
          score = cands.map { |rel, _| [rel.split("/").reverse.zip(parts.reverse).take_while { |a, b| a == b }.size, rel] }
          best = score.map(&:first).max
          top = score.select { |n, _| n == best }
          next unless top.size == 1
          files[f] = cands[top[0][1]]
          moved[top[0][1].split("/")[0, 3].join("/")] += 1
        end
        moved.sort.each { |d, n| res["notes"] << "#{n} listed file#{n == 1 ? "" : "s"} taken from /#{d}" }
      end

      # Executables: the gem's own, or Debian's copy in usr/bin unless it
      # is a RubyGems wrapper (which would load itself).
      bindir = (spec.bindir || "bin").to_s
      kept = []
      spec.executables.each do |exe|
        dest = File.join(bindir, exe)
        unless files[dest]
          deb = resolve(root, File.join(root, "usr/bin", exe))
          if deb && File.file?(deb) && !File.read(deb, 4096).to_s.include?("generated by RubyGems")
            files[dest] = deb
          end
        end
        if files[dest]
          kept << exe
        else
          res["notes"] << "executable #{exe} dropped (not in the package)"
        end
      end

      lib_files = files.keys.select { |f| spec.raw_require_paths.any? { |rp| f.start_with?(rp.to_s + "/") } }
      raise "no library files for #{spec.full_name}" if lib_files.empty?
      native = files.keys.any? { |f| f.end_with?(".so") }

      # Stage the files with normalised modes.
      stage = File.join(stage_base, "#{t["package"]}-#{spec.full_name}")
      FileUtils.rm_rf(stage)
      FileUtils.mkdir_p(stage)
      files.keys.sort.each do |f|
        dest = File.join(stage, f)
        FileUtils.mkdir_p(File.dirname(dest))
        FileUtils.cp(files[f], dest)
        exec = File.executable?(files[f]) || f.start_with?(bindir + "/") || f.end_with?(".so")
        File.chmod(exec ? 0o755 : 0o644, dest)
      end

      spec.files = files.keys.sort
      spec.test_files = []
      spec.extra_rdoc_files = spec.extra_rdoc_files.select { |f| files[f] }
      spec.executables = kept
      spec.extensions = []
      spec.signing_key = nil
      spec.cert_chain = []
      if native
        # Platform stays "ruby": RubyGems before 3.3.20 (Debian 12 has
        # 3.3.15) cannot install a platform gem by name from a local
        # directory (rubygems#5780). The extension is prebuilt for this
        # Ruby's ABI, so the gem asks for this Ruby's minor version.
        major, minor = RUBY_API.split(".").map(&:to_i)
        reqs = spec.required_ruby_version.requirements.reject { |op, v| op == ">=" && v == Gem::Version.new("0") }
        spec.required_ruby_version = reqs.map { |op, v| "#{op} #{v}" } + [">= #{major}.#{minor}", "< #{major}.#{minor + 1}.dev"]
      end
      spec.metadata = spec.metadata.merge("debian_package" => "#{t["package"]} #{t["version"]}".strip,
                                          "debian_architecture" => t["architecture"].to_s)
      res["native"] = native

      # Runtime dependencies a gem of the input satisfies; development
      # ones go. A default gem of Ruby does not count: gem install
      # --install-dir resolves from the install dir and the .gem files only.
      deps = []
      spec.dependencies.each do |d|
        next unless d.runtime?
        if provided[d.name].any? { |v| d.requirement.satisfied_by?(v) }
          deps << d
          next
        end
        why = if !provided[d.name].empty?
                "the input has only #{provided[d.name].sort.join(", ")}"
              elsif (dv = defaults[d.name].select { |v| d.requirement.satisfied_by?(v) }.max)
                "Ruby's default gem #{d.name} #{dv} provides it"
              else
                "no package of the input provides it"
              end
        res["dropped"] << "#{d.name} (#{d.requirement}): #{why}"
      end
      spec.instance_variable_set(:@dependencies, deps)

      epoch = spec.date ? spec.date.to_i : 315_532_800
      epoch = 315_532_800 if epoch < 315_532_800
      ENV["SOURCE_DATE_EPOCH"] = epoch.to_s

      file = File.join(out_dir, spec.file_name)
      tmp = File.join(out_dir, ".#{spec.file_name}.tmp")
      Dir.chdir(stage) do
        begin
          Gem::Package.build(spec, false, false, tmp)
        rescue Gem::InvalidSpecificationException => e
          res["notes"] << "built without validation: #{e.message}"
          Gem::Package.build(spec, true, false, tmp)
        end
      end
      File.rename(tmp, file)
      FileUtils.rm_rf(stage)
      res["file"] = file
      res["platform"] = spec.platform.to_s
    rescue StandardError, ScriptError => e
      res["error"] = "#{e.class}: #{e.message}"
    end
  end
end

write_json(results)
`
