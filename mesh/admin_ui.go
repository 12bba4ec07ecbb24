package mesh

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
//go:embed admin_ui/index.html admin_ui/style.css admin_ui/app.js
var adminUI embed.FS

// adminPage serves the page with a Content-Security-Policy that allows
// exactly its own inline style and script (by hash) and fetches to the
// admin endpoint: names on the page come from the control plane, and
// should one ever reach the page as markup, the browser runs nothing it
// brings.
type adminPage struct {
	body []byte
	csp  string
}

func newAdminPage() (*adminPage, error) {
	read := func(name string) (string, error) {
		b, err := adminUI.ReadFile("admin_ui/" + name)
		return string(b), err
	}
	page, err := read("index.html")
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
	if strings.Count(page, "{{STYLE}}") != 1 || strings.Count(page, "{{SCRIPT}}") != 1 ||
		strings.Contains(script, "</script") || strings.Contains(style, "</style") {
		return nil, errors.New("weft: admin page: malformed embedded assets")
	}
	page = strings.Replace(page, "{{STYLE}}", style, 1)
	page = strings.Replace(page, "{{SCRIPT}}", script, 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	return &adminPage{
		body: []byte(page),
		csp: "default-src 'none'; script-src " + hash(script) + "; style-src " + hash(style) +
			"; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
	}, nil
}

func (p *adminPage) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", p.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.Write(p.body)
}
