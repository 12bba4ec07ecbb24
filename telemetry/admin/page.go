package admin

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
)

// The admin page is one self-contained HTML response: its style and
// script are inlined, so it needs no other asset, CDN or build step, and
// works wherever the admin port is reachable (a port-forward included).
//
//go:embed ui/index.html ui/style.css ui/app.js
var uiFS embed.FS

// page serves the page with a Content-Security-Policy that allows
// exactly its own inline style and script (by hash) and fetches to the
// admin endpoint: names on the page come from the control plane, and
// should one ever reach the page as markup, the browser runs nothing it
// brings.
type page struct {
	body []byte
	csp  string
}

func newPage() (*page, error) {
	read := func(name string) (string, error) {
		b, err := uiFS.ReadFile("ui/" + name)
		return string(b), err
	}
	doc, err := read("index.html")
	if err != nil {
		return nil, err
	}
	style, err := read("style.css")
	if err != nil {
		return nil, err
	}
	script, err := read("app.js")
	if err != nil {
		return nil, err
	}
	if strings.Count(doc, "{{STYLE}}") != 1 || strings.Count(doc, "{{SCRIPT}}") != 1 ||
		strings.Contains(script, "</script") || strings.Contains(style, "</style") {
		return nil, errors.New("admin: page: malformed embedded assets")
	}
	doc = strings.Replace(doc, "{{STYLE}}", style, 1)
	doc = strings.Replace(doc, "{{SCRIPT}}", script, 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return &page{
		body: []byte(doc),
		csp: "default-src 'none'; script-src " + hash(script) + "; style-src " + hash(style) +
			"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	}, nil
}

func (p *page) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.Write(p.body)
}
