package openapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"

	"github.com/sandboxapi/sandboxapi/cell/openapi"
	"github.com/sandboxapi/sandboxapi/cell/openapi/openapitest"
)

func TestDocument(t *testing.T) {
	if _, err := openapitest.New(); err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(openapi.JSON(), &doc); err != nil || doc["openapi"] != "3.1.0" {
		t.Fatalf("served document: %v, openapi %v", err, doc["openapi"])
	}
}

// docExample is one curl command of docs/*.md.
type docExample struct {
	where  string // file:line
	method string
	url    string
	body   []byte
	// contentType is what curl sends: the -H given, or for -d its
	// default, which the API ignores for JSON bodies.
	contentType string
}

// shBlock is a fenced sh block of a Markdown file.
var shBlock = regexp.MustCompile("(?ms)^```sh\n(.*?)^```")

// docExamples are the curl commands of the docs that call the API, their
// words expanded with API and KEY set; an example whose words need a
// command substitution ($(base64 …)) cannot be expanded here and is
// returned in skipped.
func docExamples(t *testing.T) (examples []docExample, skipped []string) {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("docs: %v", err)
	}
	cfg := &expand.Config{Env: expand.ListEnviron("API=http://localhost:8080", "KEY=sk_test")}
	for _, f := range files {
		md, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range shBlock.FindAllSubmatchIndex(md, -1) {
			block := md[m[2]:m[3]]
			line0 := bytes.Count(md[:m[2]], []byte("\n")) + 1
			prog, err := syntax.NewParser().Parse(bytes.NewReader(block), f)
			if err != nil {
				t.Errorf("%s:%d: the sh block does not parse: %v", f, line0, err)
				continue
			}
			syntax.Walk(prog, func(n syntax.Node) bool {
				call, ok := n.(*syntax.CallExpr)
				if !ok || len(call.Args) == 0 || call.Args[0].Lit() != "curl" {
					return true
				}
				where := filepath.Base(f) + ":" + strconv.Itoa(line0+int(call.Pos().Line())-1)
				var words []string
				for _, w := range call.Args[1:] {
					s, err := expand.Literal(cfg, w)
					if err != nil {
						skipped = append(skipped, where)
						return true
					}
					words = append(words, s)
				}
				if ex, ok := parseCurl(words); ok {
					ex.where = where
					examples = append(examples, ex)
				}
				return true
			})
		}
	}
	return examples, skipped
}

// parseCurl reads the curl options the docs use.
func parseCurl(words []string) (docExample, bool) {
	var ex docExample
	for i := 0; i < len(words); i++ {
		w := words[i]
		next := func() string {
			if i+1 < len(words) {
				i++
				return words[i]
			}
			return ""
		}
		switch {
		case w == "-X":
			ex.method = next()
		case w == "-d" || w == "--data-binary" || w == "--data":
			ex.body = []byte(next())
		case w == "-H":
			if name, value, ok := strings.Cut(next(), ":"); ok && strings.EqualFold(name, "Content-Type") {
				ex.contentType = strings.TrimSpace(value)
			}
		case w == "-u" || w == "-o" || w == "-w" || w == "--cacert" || w == "--cert" || w == "--key" || w == "--resolve":
			next()
		case strings.HasPrefix(w, "http://localhost:8080"):
			ex.url = w
		}
	}
	if ex.url == "" {
		return ex, false
	}
	if ex.body != nil && ex.contentType == "" {
		ex.contentType = "application/x-www-form-urlencoded"
	}
	if ex.method == "" {
		ex.method = http.MethodGet
		if ex.body != nil {
			ex.method = http.MethodPost
		}
	}
	return ex, true
}

// TestDocsExamples: every curl example of docs/*.md names a path and
// method of the document, and its request is one the document accepts.
func TestDocsExamples(t *testing.T) {
	c, err := openapitest.New()
	if err != nil {
		t.Fatal(err)
	}
	examples, skipped := docExamples(t)
	if len(examples) < 20 {
		t.Fatalf("found %d curl examples in docs/*.md; the docs have more: is the parser broken?", len(examples))
	}
	for _, ex := range examples {
		t.Run(ex.where, func(t *testing.T) {
			req, err := http.NewRequest(ex.method, ex.url, bytes.NewReader(ex.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-API-Key", "sk_test")
			if ex.contentType != "" {
				req.Header.Set("Content-Type", ex.contentType)
			}
			if errs := c.ValidateRequest(req, nil); len(errs) > 0 {
				for _, e := range errs {
					t.Errorf("%s %s: %v\n  body: %.300s", ex.method, ex.url, e, ex.body)
				}
			}
		})
	}
	t.Logf("%d examples validated; %d use a command substitution and are validated end to end only: %v",
		len(examples), len(skipped), skipped)
}
