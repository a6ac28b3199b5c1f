package selfserve

import (
	"bytes"
	"html/template"
	"net/http"
	"strconv"

	"github.com/sandboxapi/sandboxapi/billing/accounts"
	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// The pages are html/template, so everything in them is escaped for where
// it stands; they load nothing from elsewhere (see the CSP in
// writeHTML).
var pages = template.Must(template.New("layout").Parse(`{{define "top"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<title>{{.Title}} · SandboxAPI</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}
fieldset{border:1px solid #ccc;border-radius:6px;margin:0 0 1rem}
label{display:block;margin:.3rem 0}
input[type=email]{width:100%;padding:.4rem;font:inherit}
button{font:inherit;padding:.5rem 1.2rem}
.error{background:#fde8e8;border:1px solid #e99;padding:.5rem 1rem;border-radius:6px}
code,pre{background:#f4f4f4;border-radius:4px;padding:.1rem .3rem;overflow-wrap:anywhere}
pre{padding:.6rem;white-space:pre-wrap}
</style></head><body><h1>{{.Title}}</h1>{{end}}

{{define "signup"}}{{template "top" .}}
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/signup">
<fieldset><legend>Plan</legend>
{{range .Plans}}<label><input type="radio" name="plan" value="{{.Name}}"{{if .Checked}} checked{{end}}>
<strong>{{.Name}}</strong> — {{.Price}}, {{.Executions}} executions a month</label>
{{end}}</fieldset>
<label>Email <input type="email" name="email" value="{{.Email}}" required maxlength="254" autocomplete="email"></label>
<p><button type="submit">Sign up</button></p>
<p>{{if .Free}}The free plan needs no card: its API key is shown on the next page. {{end}}{{if .Paid}}A paid plan goes on to Stripe Checkout, then back here for the key.{{end}}</p>
</form>
</body></html>{{end}}

{{define "key"}}{{template "top" .}}
<p>Account <code>{{.AccountID}}</code> on plan <strong>{{.Plan}}</strong>. Its API key:</p>
<pre id="key">{{.APIKey}}</pre>
<p><strong>Copy it now: it is shown this once.</strong> SandboxAPI keeps only its hash, so nobody can show it to you again.</p>
<p>Try it:</p>
<pre>curl -s {{.PublicURL}}/v1/execute -H "X-API-Key: {{.APIKey}}" \
  -d '{"language":"python3","code":"print(\"Hello, World!\")"}'</pre>
</body></html>{{end}}

{{define "message"}}{{template "top" .}}
<p>{{.Text}}</p>
{{if .Refresh}}<p><a href="">Reload now</a></p>{{end}}
<p><a href="/signup">Back to the signup page</a></p>
</body></html>{{end}}
`))

type signupForm struct {
	Plan, Email, Error string
}

type planChoice struct {
	Name, Price string
	Executions  int
	Checked     bool
}

type signupPage struct {
	Title, Email, Error string
	Refresh             int
	Plans               []planChoice
	// Free: the free signup is open; Paid: Checkout sells plans here.
	Free, Paid bool
}

type keyPage struct {
	Title, AccountID, Plan, APIKey, PublicURL string
	Refresh                                   int
}

type messagePage struct {
	Title, Text string
	Refresh     int
}

// renderSignup shows the signup page: the free plan, then every plan
// Checkout sells.
func (s *Service) renderSignup(w http.ResponseWriter, status int, form signupForm) {
	page := signupPage{Title: "Sign up", Email: form.Email, Error: form.Error}
	choices := []plans.Plan{}
	if free, ok := s.catalog.Get(plans.Free); ok && !s.cfg.NoFreeSignup {
		choices = append(choices, free)
		page.Free = true
	}
	paid := s.paidPlans()
	page.Paid = len(paid) > 0
	choices = append(choices, paid...)
	for _, p := range choices {
		price := "free"
		if p.PriceUSDMonth > 0 {
			price = "$" + strconv.FormatFloat(p.PriceUSDMonth, 'f', -1, 64) + " a month"
		}
		page.Plans = append(page.Plans, planChoice{
			Name: p.Name, Price: price, Executions: p.ExecutionsPerMonth,
			Checked: p.Name == form.Plan || (form.Plan == "" && p.Name == choices[0].Name),
		})
	}
	s.writeHTML(w, status, "signup", page)
}

// renderKey shows a new key once, with an example that calls the
// gateway at its public URL or, without one, at the host r came to.
func (s *Service) renderKey(w http.ResponseWriter, r *http.Request, status int, a accounts.Account, k accounts.IssuedKey) {
	public := s.public
	if public == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		public = scheme + "://" + r.Host
	}
	s.writeHTML(w, status, "key", keyPage{
		Title: "Your API key", AccountID: a.ID, Plan: a.Plan, APIKey: k.APIKey, PublicURL: public,
	})
}

func (s *Service) renderMessage(w http.ResponseWriter, status int, m messagePage) {
	s.writeHTML(w, status, "message", m)
}

// writeHTML renders a page whole before sending it, so a template error
// is a 500 rather than half a page. The pages show keys: never cached,
// never sent on as a Referer (the success URL's session_id reveals the
// key), never framed.
func (s *Service) writeHTML(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, data); err != nil {
		s.logger.Error("selfserve: rendering page", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// form-action names Stripe Checkout: browsers hold a form's redirect
	// to it too.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' https://checkout.stripe.com; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
