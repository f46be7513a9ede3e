package live

import (
	"embed"
	"errors"
	"io/fs"
	"net/http"
	"path"
)

// The page: plain HTML, CSS and JavaScript, embedded as they are written.
//
//go:embed static
var static embed.FS

var errNoFile = errors.New("the live page has no such file")

// ServePage serves the page (index.html) at /.
func ServePage(w http.ResponseWriter, r *http.Request) {
	serve(w, "index.html")
}

// ServeFile serves one of the page's files by name (live.js, live.css).
// It returns an error for any other name.
func ServeFile(w http.ResponseWriter, name string) error {
	if name == "index.html" || path.Base(name) != name {
		return errNoFile
	}
	if _, err := fs.Stat(static, "static/"+name); err != nil {
		return errNoFile
	}
	serve(w, name)
	return nil
}

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
}

func serve(w http.ResponseWriter, name string) {
	b, err := static.ReadFile("static/" + name)
	if err != nil {
		panic("live: embedded file missing: " + name) // a build without static/ is a bug
	}
	h := w.Header()
	h.Set("Content-Type", types[path.Ext(name)])
	h.Set("Cache-Control", "no-cache")
	// Nothing from anywhere else: the page works offline and runs no
	// script it did not bring. connect-src * lets it drive the other
	// nodes it is given (?nodes=).
	h.Set("Content-Security-Policy", "default-src 'self'; connect-src *; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}
