package pkgcache

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// DebWheel is a wheel made from Debian packages.
type DebWheel struct {
	File    string   // the .whl written
	Name    string   // the distribution's name as its metadata gives it (e.g. "pandas")
	Version string   // its upstream version from the metadata (e.g. "1.5.3")
	Debian  []string // the Debian packages its files came from
	Dropped []string // Requires-Dist entries left out because no tree provides them
	// Notes are other things left out or changed: files behind symlinks
	// that point out of the tree, top-level entries no distribution of a
	// shared tree claims, a second tree holding the same distribution.
	Notes []string
}

// debPythonDir is where Debian installs Python 3 modules in a package.
const debPythonDir = "usr/lib/python3/dist-packages"

// debWheelTime is the timestamp of every member of a Debian-made wheel,
// so the same trees give the same bytes (zip cannot go below 1980).
var debWheelTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// debWheelDpkgTimeout bounds reading one .deb's control fields.
const debWheelDpkgTimeout = 30 * time.Second

var (
	// wheelNameEscape is what the wheel file name spec replaces with "_".
	wheelNameEscape = regexp.MustCompile(`[^A-Za-z0-9]+`)
	// soTag reads a CPython extension's interpreter and multiarch
	// triplet: foo.cpython-311-x86_64-linux-gnu.so.
	soTag = regexp.MustCompile(`\.cpython-3(\d+)[a-z]*-([a-z0-9_]+)-linux-gnu[a-z]*\.so$`)
	// requirementRE splits a PEP 508 requirement: name, [extras], the
	// version specifier (or "@ url") and the marker.
	requirementRE = regexp.MustCompile(`^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(?:;\s*(.*?))?\s*$`)
)

// debDist is one distribution found in a tree's dist-packages.
type debDist struct {
	name, version string
	key           string // Normalize(Pip, name)
	tree          int    // index of the tree holding the metadata
	meta          string // the metadata entry's name in dist-packages
	distInfo      bool   // .dist-info (else .egg-info)
	headers       []metaField
	body          string
	requires      []requirement
	extras        []string // extras named by requires.txt sections
	topLevel      []string // top_level.txt and RECORD's top-level modules
	entryPoints   []byte
	entries       []debEntry // top-level entries of dist-packages it owns
	notes         []string
}

// debEntry is a top-level entry of a tree's dist-packages.
type debEntry struct {
	tree int
	name string
}

// metaField is a header of METADATA or PKG-INFO, with its continuation
// lines.
type metaField struct {
	key, value string
	raw        string
}

// requirement is a Requires-Dist entry, its version specifier apart.
type requirement struct {
	name, extras, spec, marker string
}

func (r requirement) String() string {
	s := r.name + r.extras
	if r.spec != "" {
		s += " " + r.spec
	}
	if r.marker != "" {
		s += "; " + r.marker
	}
	return s
}

// WheelsFromDebian turns the Python distributions of Debian python3-*
// packages (unpacked trees, as Fetch makes them) into wheels in outDir,
// which pip install --no-index --find-links outDir installs offline on the
// Python those packages were built for.
//
// A distribution is a NAME-VER.dist-info or NAME-VER.egg-info (a
// directory or a single PKG-INFO file) in usr/lib/python3/dist-packages.
// It gets the top-level entries of its own tree's dist-packages (split by
// top_level.txt and RECORD when the tree holds several distributions) and
// the same-named entries of trees that hold no metadata at all, as
// Debian's python3-pandas-lib holds pandas/_libs for python3-pandas.
// __pycache__ and *.pyc are left out. Symlinks are resolved as if the
// tree's Root were "/" (Debian links data files to /usr/share/...); one
// whose target the tree lacks is left out (DebWheel.Notes).
//
// Requirements keep their names, extras and markers but not their version
// specifiers: Debian's packages are one consistent set at Debian's
// versions, and upstream pins often name versions Debian does not have
// (or patched differently), which would make pip refuse a working set. A
// requirement no distribution of the trees provides is left out
// (DebWheel.Dropped), since pip could never satisfy it offline. Debian
// often strips upstream's install_requires from the metadata (python3-pandas
// lists neither numpy nor dateutil), so the Depends of the package's .deb
// are added as requirements too when they name trees that give
// distributions: the .deb is read from Root/DEBIAN/control (dpkg-deb -R
// layout) or from the debs directory Fetch leaves beside the trees.
//
// Output is deterministic: sorted members, fixed timestamps. err is only
// for failures to read the trees or write outDir.
func WheelsFromDebian(trees []DebTree, outDir string) ([]DebWheel, error) {
	trees = slices.Clone(trees)
	sort.SliceStable(trees, func(i, j int) bool { return trees[i].Package < trees[j].Package })

	// Every tree's top-level entries, and the distributions among them.
	entries := make([][]string, len(trees))
	var dists []*debDist
	byKey := map[string]*debDist{}
	treeDists := make([][]*debDist, len(trees))
	for i, t := range trees {
		names, err := readDirNames(filepath.Join(t.Root, debPythonDir))
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if n == "__pycache__" || strings.HasSuffix(n, ".pyc") {
				continue
			}
			if !strings.HasSuffix(n, ".dist-info") && !strings.HasSuffix(n, ".egg-info") {
				entries[i] = append(entries[i], n)
				continue
			}
			d, err := readDebDist(filepath.Join(t.Root, debPythonDir), n)
			if err != nil {
				return nil, err
			}
			if d == nil {
				continue // no usable Name and Version
			}
			d.tree = i
			if prev := byKey[d.key]; prev != nil {
				prev.notes = append(prev.notes, fmt.Sprintf("%s: second metadata %s (%s %s) left out", t.Package, n, d.name, d.version))
				continue
			}
			// Some Debian builds lose the version (setuptools_scm
			// without git gives 0.0.0): Debian's upstream version is the
			// real one.
			if placeholderVersion(d.version) {
				if v := debUpstreamVersion(t.Version); v != "" {
					d.notes = append(d.notes, fmt.Sprintf("version %s from Debian's %s (the metadata says %s)", v, t.Version, d.version))
					d.version = v
				}
			}
			byKey[d.key] = d
			dists = append(dists, d)
			treeDists[i] = append(treeDists[i], d)
		}
	}

	// Each tree's own entries go to its distribution, or, for several,
	// to the one whose top_level.txt or RECORD names them.
	for i := range trees {
		ds := treeDists[i]
		switch len(ds) {
		case 0:
			continue
		case 1:
			for _, n := range entries[i] {
				ds[0].entries = append(ds[0].entries, debEntry{i, n})
			}
			continue
		}
		for _, n := range entries[i] {
			mod := moduleName(n)
			owner := slices.IndexFunc(ds, func(d *debDist) bool { return slices.Contains(d.topLevel, mod) })
			if owner < 0 {
				owner = slices.IndexFunc(ds, func(d *debDist) bool { return Normalize(Pip, d.name) == Normalize(Pip, mod) })
			}
			if owner < 0 {
				ds[0].notes = append(ds[0].notes, fmt.Sprintf("%s: %s left out: no distribution of the package claims it", trees[i].Package, n))
				continue
			}
			ds[owner].entries = append(ds[owner].entries, debEntry{i, n})
		}
	}
	// Trees without metadata join the distributions that have their
	// top-level names.
	for _, d := range dists {
		for _, e := range d.entries {
			if mod := moduleName(e.name); mod != "" && !slices.Contains(d.topLevel, mod) {
				d.topLevel = append(d.topLevel, mod)
			}
		}
	}
	for i := range trees {
		if len(treeDists[i]) > 0 {
			continue
		}
		for _, n := range entries[i] {
			mod := moduleName(n)
			if mod == "" {
				continue
			}
			if owner := slices.IndexFunc(dists, func(d *debDist) bool { return slices.Contains(d.topLevel, mod) }); owner >= 0 {
				dists[owner].entries = append(dists[owner].entries, debEntry{i, n})
			}
		}
	}

	// Debian package (and virtual package) → distributions, for Depends.
	controls := make([]map[string]string, len(trees))
	pkgDists := map[string][]*debDist{}
	for _, d := range dists {
		for _, tr := range debTreesOf(d) {
			controls[tr] = debControl(trees[tr])
			for _, p := range append([]string{trees[tr].Package}, debPackageNames(controls[tr]["Provides"])...) {
				if !slices.Contains(pkgDists[p], d) {
					pkgDists[p] = append(pkgDists[p], d)
				}
			}
		}
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	var out []DebWheel
	for _, d := range dists {
		w, err := writeDebWheel(trees, d, byKey, pkgDists, controls, outDir)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// debTreesOf is the trees a distribution's files come from, its
// metadata's first.
func debTreesOf(d *debDist) []int {
	out := []int{d.tree}
	for _, e := range d.entries {
		if !slices.Contains(out, e.tree) {
			out = append(out, e.tree)
		}
	}
	return out
}

// writeDebWheel writes d's wheel into outDir.
func writeDebWheel(trees []DebTree, d *debDist, byKey map[string]*debDist, pkgDists map[string][]*debDist,
	controls []map[string]string, outDir string) (DebWheel, error) {
	w := DebWheel{Name: d.name, Version: d.version, Notes: d.notes}
	for _, tr := range debTreesOf(d) {
		w.Debian = append(w.Debian, trees[tr].Package)
	}

	// The files, by their path in the wheel.
	files := map[string]string{}
	for _, e := range d.entries {
		t := trees[e.tree]
		// Symlinks resolve in the entry's own tree first, then in the
		// others, as if all were installed together.
		roots := []string{t.Root}
		for _, o := range trees {
			if o.Root != t.Root {
				roots = append(roots, o.Root)
			}
		}
		c := treeCollector{roots: roots, files: files, notes: &w.Notes}
		if err := c.collect(t.Root, filepath.Join(t.Root, debPythonDir, e.name), e.name, 0); err != nil {
			return w, err
		}
	}

	// Requirements: the metadata's, then Debian's Depends.
	var reqs []string
	seen := map[string]bool{}
	unconditional := map[string]bool{}
	add := func(r requirement) {
		s := r.String()
		if !seen[s] {
			seen[s] = true
			reqs = append(reqs, s)
		}
		if r.marker == "" {
			unconditional[Normalize(Pip, r.name)] = true
		}
	}
	for _, r := range d.requires {
		k := Normalize(Pip, r.name)
		if byKey[k] == nil {
			w.Dropped = append(w.Dropped, r.String())
			continue
		}
		// Debian's set is consistent at Debian's versions; upstream's
		// pins (often stricter, or naming versions Debian patched) would
		// only make pip refuse it. Names, extras and markers stay.
		r.spec = ""
		add(r)
	}
	var fromDebian []string
	for _, tr := range debTreesOf(d) {
		c := controls[tr]
		for _, field := range []string{"Pre-Depends", "Depends"} {
			for _, alts := range strings.Split(c[field], ",") {
				for _, alt := range strings.Split(alts, "|") {
					names := debPackageNames(alt)
					if len(names) == 0 || len(pkgDists[names[0]]) == 0 {
						continue
					}
					for _, dep := range pkgDists[names[0]] {
						if dep != d && !unconditional[dep.key] && !slices.Contains(fromDebian, dep.name) {
							fromDebian = append(fromDebian, dep.name)
						}
					}
					break
				}
			}
		}
	}
	slices.Sort(fromDebian)
	for _, n := range fromDebian {
		add(requirement{name: n})
	}

	// Tag: the CPython ABIs of its extension modules, if any.
	tag, purelib := "py3-none-any", true
	var pys []string
	var arch string
	for p := range files {
		if !strings.HasSuffix(p, ".so") && !strings.Contains(path.Base(p), ".so.") {
			continue
		}
		purelib = false
		if m := soTag.FindStringSubmatch(path.Base(p)); m != nil {
			if py := "cp3" + m[1]; !slices.Contains(pys, py) {
				pys = append(pys, py)
			}
			arch = m[2]
		}
	}
	var tags []string
	if !purelib {
		if arch == "" {
			arch = debArch(trees[d.tree].Architecture)
		}
		plat := "linux_" + wheelArch(arch)
		if len(pys) == 0 {
			tags = []string{"py3-none-" + plat}
		} else {
			slices.Sort(pys)
			for _, py := range pys {
				tags = append(tags, py+"-"+py+"-"+plat)
			}
		}
		tag = strings.Join(pys, ".") + "-" + strings.Join(pys, ".") + "-" + plat
		if len(pys) == 0 {
			tag = tags[0]
		}
	} else {
		tags = []string{tag}
	}

	version := strings.ReplaceAll(d.version, "-", "_")
	esc := strings.ToLower(wheelNameEscape.ReplaceAllString(d.name, "_"))
	infoDir := esc + "-" + version + ".dist-info"

	var meta bytes.Buffer
	extras := map[string]bool{}
	for _, f := range d.headers {
		switch strings.ToLower(f.key) {
		case "requires-dist":
			continue
		case "metadata-version":
			if CompareVersions(f.value, "2.1") < 0 {
				meta.WriteString("Metadata-Version: 2.1\n")
				continue
			}
		case "version":
			meta.WriteString("Version: " + version + "\n")
			continue
		case "provides-extra":
			extras[f.value] = true
		}
		meta.WriteString(f.raw)
	}
	for _, x := range d.extras {
		if !extras[x] {
			extras[x] = true
			meta.WriteString("Provides-Extra: " + x + "\n")
		}
	}
	for _, r := range reqs {
		meta.WriteString("Requires-Dist: " + r + "\n")
	}
	if d.body != "" {
		meta.WriteString("\n" + d.body)
	}

	infoFiles := map[string][]byte{
		"METADATA": meta.Bytes(),
		"WHEEL": []byte("Wheel-Version: 1.0\nGenerator: sandboxapi\nRoot-Is-Purelib: " + fmt.Sprint(purelib) +
			"\nTag: " + strings.Join(tags, "\nTag: ") + "\n"),
	}
	if len(d.entryPoints) > 0 {
		infoFiles["entry_points.txt"] = d.entryPoints
	}
	if len(d.topLevel) > 0 {
		infoFiles["top_level.txt"] = []byte(strings.Join(d.topLevel, "\n") + "\n")
	}

	w.File = filepath.Join(outDir, esc+"-"+version+"-"+tag+".whl")
	if err := writeWheelZip(w.File, files, infoDir, infoFiles); err != nil {
		return w, err
	}
	return w, nil
}

// writeWheelZip writes the wheel: files (wheel path → source file) at the
// root, sorted, then infoDir with infoFiles and RECORD last.
func writeWheelZip(file string, files map[string]string, infoDir string, infoFiles map[string][]byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".debwheel-*")
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	zw := zip.NewWriter(tmp)
	var record bytes.Buffer
	rw := csv.NewWriter(&record)
	put := func(name string, mode os.FileMode, r io.Reader) error {
		h := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: debWheelTime}
		h.SetMode(mode)
		zf, err := zw.CreateHeader(h)
		if err != nil {
			return err
		}
		sum := sha256.New()
		n, err := io.Copy(io.MultiWriter(zf, sum), r)
		if err != nil {
			return err
		}
		return rw.Write([]string{name, "sha256=" + base64.RawURLEncoding.EncodeToString(sum.Sum(nil)), fmt.Sprint(n)})
	}
	for _, name := range slices.Sorted(mapKeys(files)) {
		src := files[name]
		fi, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("pkgcache: %w", err)
		}
		mode := os.FileMode(0o644)
		if fi.Mode()&0o111 != 0 {
			mode = 0o755
		}
		f, err := os.Open(src)
		if err != nil {
			return fmt.Errorf("pkgcache: %w", err)
		}
		err = put(name, mode, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("pkgcache: %s: %w", file, err)
		}
	}
	for _, name := range slices.Sorted(mapKeys(infoFiles)) {
		if err := put(infoDir+"/"+name, 0o644, bytes.NewReader(infoFiles[name])); err != nil {
			return fmt.Errorf("pkgcache: %s: %w", file, err)
		}
	}
	if err := rw.Write([]string{infoDir + "/RECORD", "", ""}); err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	rw.Flush()
	if err := put(infoDir+"/RECORD", 0o644, bytes.NewReader(record.Bytes())); err != nil {
		return fmt.Errorf("pkgcache: %s: %w", file, err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("pkgcache: %s: %w", file, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	return nil
}

// mapKeys is m's keys (for slices.Sorted).
func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// treeCollector gathers the regular files of dist-packages entries.
type treeCollector struct {
	// roots are where symlinks resolve, in order: the entry's own tree,
	// then the other trees of the input.
	roots []string
	files map[string]string // wheel path → source file
	notes *[]string
}

// collect adds the regular files at src (inside the tree at base; wheel
// path rel), descending into directories and resolving symlinks inside
// the trees only.
func (c treeCollector) collect(base, src, rel string, depth int) error {
	name := filepath.Base(rel)
	if name == "__pycache__" || strings.HasSuffix(name, ".pyc") || strings.HasSuffix(name, ".pyo") {
		return nil
	}
	if depth > 64 {
		*c.notes = append(*c.notes, rel+": left out: nested too deep (a symlink loop?)")
		return nil
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("pkgcache: %w", err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		inTree, err := filepath.Rel(base, src)
		if err != nil {
			return fmt.Errorf("pkgcache: %w", err)
		}
		roots := append([]string{base}, slices.DeleteFunc(slices.Clone(c.roots), func(r string) bool { return r == base })...)
		root, resolved, ok := resolveInTrees(roots, inTree)
		if !ok {
			target, _ := os.Readlink(src)
			*c.notes = append(*c.notes, fmt.Sprintf("%s: left out: symlink to %s, which no package of the input holds", rel, target))
			return nil
		}
		base, src = root, resolved
		if fi, err = os.Lstat(src); err != nil {
			return fmt.Errorf("pkgcache: %w", err)
		}
	}
	switch {
	case fi.IsDir():
		names, err := readDirNames(src)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := c.collect(base, filepath.Join(src, n), rel+"/"+n, depth+1); err != nil {
				return err
			}
		}
	case fi.Mode().IsRegular():
		if _, ok := c.files[rel]; !ok {
			c.files[rel] = src
		}
	}
	return nil
}

// resolveInTree resolves rel (a path inside root, which may go through
// symlinks) as if root were "/": absolute targets are taken from root, ".."
// stops at root, so the result never leaves the tree. ok is false when
// some component does not exist or links loop.
func resolveInTree(root, rel string) (string, bool) {
	_, p, ok := resolveInTrees([]string{root}, rel)
	return p, ok
}

// resolveInTrees is resolveInTree over several trees laid over each other
// (as the packages would be installed together): each path component is
// looked up in the roots in order, the first that has it wins. It returns
// the root the result is in.
func resolveInTrees(roots []string, rel string) (string, string, bool) {
	todo := strings.Split(filepath.ToSlash(rel), "/")
	var done []string
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(done) > 0 {
				done = done[:len(done)-1]
			}
			continue
		}
		var cur string
		var fi os.FileInfo
		for _, root := range roots {
			p := filepath.Join(append([]string{root}, append(done, c)...)...)
			if st, err := os.Lstat(p); err == nil {
				cur, fi = p, st
				break
			}
		}
		if fi == nil {
			return "", "", false
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			done = append(done, c)
			continue
		}
		if hops++; hops > 40 {
			return "", "", false
		}
		target, err := os.Readlink(cur)
		if err != nil {
			return "", "", false
		}
		if strings.HasPrefix(target, "/") {
			done = nil
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	for _, root := range roots {
		p := filepath.Join(append([]string{root}, done...)...)
		if _, err := os.Lstat(p); err == nil {
			return root, p, true
		}
	}
	return "", "", false
}

// readDirNames is dir's entry names, sorted; none when dir is missing.
func readDirNames(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pkgcache: %w", err)
	}
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out, nil
}

// moduleName is the import name a top-level entry of dist-packages
// provides: the directory, or the file name up to its first dot
// (six.py, _foo.cpython-311-x86_64-linux-gnu.so); "" for .pth files and
// the like.
func moduleName(entry string) string {
	name, ext, _ := strings.Cut(entry, ".")
	switch {
	case ext == "":
		return name
	case ext == "py" || strings.HasSuffix(ext, ".so") || ext == "so":
		return name
	}
	return ""
}

// readDebDist reads the distribution whose metadata is the entry meta of
// the dist-packages dir dp; nil when it names no Name and Version.
func readDebDist(dp, meta string) (*debDist, error) {
	d := &debDist{meta: meta, distInfo: strings.HasSuffix(meta, ".dist-info")}
	p := filepath.Join(dp, meta)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, nil // a dangling link: not a distribution
	}
	read := func(name string) []byte {
		if !fi.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(p, name))
		if err != nil {
			return nil
		}
		return b
	}
	var raw []byte
	switch {
	case !fi.IsDir():
		raw, err = os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("pkgcache: %w", err)
		}
	case d.distInfo:
		raw = read("METADATA")
	default:
		raw = read("PKG-INFO")
	}
	d.headers, d.body = parseMetadata(raw)
	for _, f := range d.headers {
		switch strings.ToLower(f.key) {
		case "name":
			if d.name == "" {
				d.name = f.value
			}
		case "version":
			if d.version == "" {
				d.version = f.value
			}
		case "requires-dist":
			if r, ok := parseRequirement(f.value); ok {
				d.requires = append(d.requires, r)
			}
		}
	}
	if d.name == "" || d.version == "" {
		return nil, nil
	}
	d.key = Normalize(Pip, d.name)
	if !d.distInfo {
		d.requires, d.extras = parseRequiresTxt(read("requires.txt"), d.requires)
	}
	d.entryPoints = read("entry_points.txt")
	for _, line := range strings.Split(string(read("top_level.txt")), "\n") {
		if line = strings.TrimSpace(line); line != "" && !slices.Contains(d.topLevel, line) {
			d.topLevel = append(d.topLevel, line)
		}
	}
	r := csv.NewReader(bytes.NewReader(read("RECORD")))
	r.FieldsPerRecord = -1
	for {
		rec, err := r.Read()
		if err != nil {
			break
		}
		first, _, _ := strings.Cut(rec[0], "/")
		if mod := moduleName(first); mod != "" && !strings.HasPrefix(first, "..") && !slices.Contains(d.topLevel, mod) {
			d.topLevel = append(d.topLevel, mod)
		}
	}
	return d, nil
}

// parseMetadata splits METADATA or PKG-INFO into its header fields (with
// their continuation lines) and body.
func parseMetadata(raw []byte) ([]metaField, string) {
	var fields []metaField
	text := strings.ReplaceAll(string(raw), "\r\n", "\n")
	for text != "" {
		line, rest, _ := strings.Cut(text, "\n")
		if line == "" {
			return fields, rest
		}
		text = rest
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			f := &fields[len(fields)-1]
			f.raw += line + "\n"
			f.value += "\n" + line
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		fields = append(fields, metaField{key: strings.TrimSpace(k), value: strings.TrimSpace(v), raw: line + "\n"})
	}
	return fields, ""
}

// parseRequirement splits a PEP 508 requirement.
func parseRequirement(s string) (requirement, bool) {
	m := requirementRE.FindStringSubmatch(s)
	if m == nil {
		return requirement{}, false
	}
	extras := strings.ReplaceAll(m[2], " ", "")
	if extras == "[]" {
		extras = ""
	}
	spec := strings.TrimSpace(m[3])
	if strings.HasPrefix(spec, "(") && strings.HasSuffix(spec, ")") {
		spec = strings.TrimSpace(spec[1 : len(spec)-1])
	}
	return requirement{name: m[1], extras: extras, spec: spec, marker: strings.TrimSpace(m[4])}, true
}

// parseRequiresTxt adds an egg-info requires.txt's requirements to reqs:
// lines before any section are unconditional, "[extra]", "[extra:marker]"
// and "[:marker]" sections become markers. extras are the extras the
// sections name.
func parseRequiresTxt(raw []byte, reqs []requirement) ([]requirement, []string) {
	var extras []string
	var extra, marker string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			extra, marker, _ = strings.Cut(line[1:len(line)-1], ":")
			extra, marker = strings.TrimSpace(extra), strings.TrimSpace(marker)
			if extra != "" && !slices.Contains(extras, extra) {
				extras = append(extras, extra)
			}
			continue
		}
		r, ok := parseRequirement(line)
		if !ok {
			continue
		}
		var parts []string
		for _, m := range []string{r.marker, marker} {
			if m != "" {
				parts = append(parts, "("+m+")")
			}
		}
		if extra != "" {
			parts = append(parts, `extra == "`+extra+`"`)
		}
		switch {
		case len(parts) == 1 && extra == "":
			r.marker = strings.TrimSuffix(strings.TrimPrefix(parts[0], "("), ")")
		default:
			r.marker = strings.Join(parts, " and ")
		}
		reqs = append(reqs, r)
	}
	return reqs, extras
}

// debControl is the control fields of t's .deb: Root/DEBIAN/control
// (dpkg-deb -R), else the .deb Fetch downloaded beside the trees
// (DIR/debs/PACKAGE_*.deb for DIR/trees/PACKAGE), read with dpkg-deb -f;
// nil when neither is there.
func debControl(t DebTree) map[string]string {
	raw, err := os.ReadFile(filepath.Join(t.Root, "DEBIAN", "control"))
	if err != nil {
		parent := filepath.Dir(t.Root)
		if filepath.Base(parent) != "trees" || filepath.Base(t.Root) != t.Package {
			return nil
		}
		debs, _ := filepath.Glob(filepath.Join(filepath.Dir(parent), "debs", t.Package+"_*.deb"))
		if len(debs) == 0 {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), debWheelDpkgTimeout)
		defer cancel()
		if raw, err = exec.CommandContext(ctx, "dpkg-deb", "-f", debs[0]).Output(); err != nil {
			return nil
		}
	}
	fields, _ := parseMetadata(raw)
	out := map[string]string{}
	for _, f := range fields {
		out[f.key] = strings.ReplaceAll(f.value, "\n", " ")
	}
	return out
}

// debPackageNames is the package names of a Debian relationship field
// ("python3-numpy (>= 1:1.18.5~), python3:any"), versions and
// architecture qualifiers left out.
func debPackageNames(field string) []string {
	var out []string
	for _, part := range strings.FieldsFunc(field, func(r rune) bool { return r == ',' || r == '|' }) {
		name, _, _ := strings.Cut(strings.TrimSpace(part), " ")
		name, _, _ = strings.Cut(name, "(")
		name, _, _ = strings.Cut(name, ":")
		if name != "" {
			out = append(out, name)
		}
	}
	return out
}

// debArch is a Debian architecture's multiarch CPU name.
func debArch(a string) string {
	switch a {
	case "amd64", "":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "i386":
		return "i386"
	case "armhf":
		return "arm"
	}
	return a
}

// wheelArch is the wheel platform CPU of a multiarch CPU name.
func wheelArch(a string) string {
	switch a {
	case "i386", "i686":
		return "i686"
	case "arm":
		return "armv7l"
	}
	return a
}

// placeholderVersion is a version a build without its version source
// writes (setuptools_scm without git: 0.0.0).
func placeholderVersion(v string) bool {
	return v == "0" || v == "0.0" || v == "0.0.0"
}

// debUpstreamRelease is the release numbers of a Debian version's
// upstream part: 1:1.24.2+dfsg-1+b1 → 1.24.2.
var debUpstreamRelease = regexp.MustCompile(`^[0-9]+(\.[0-9]+)*`)

// debUpstreamVersion is the upstream release of a Debian version, "" if
// it has none worth using.
func debUpstreamVersion(v string) string {
	if _, after, ok := strings.Cut(v, ":"); ok {
		v = after
	}
	if i := strings.LastIndex(v, "-"); i > 0 {
		v = v[:i]
	}
	r := debUpstreamRelease.FindString(v)
	if placeholderVersion(r) {
		return ""
	}
	return r
}
