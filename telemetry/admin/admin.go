package admin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// Option configures a Server.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	hosts   []string
	pprof   bool
	metrics http.Handler
}

// WithHosts names Host values (host names or addresses; a port is
// ignored) the listener answers besides localhost, loopback addresses and
// its own address. Check them with CheckHost first: New ignores an
// invalid one rather than guess.
func WithHosts(hosts ...string) Option {
	return optionFunc(func(c *config) { c.hosts = append(c.hosts, hosts...) })
}

// WithPprof serves runtime/pprof's profiles under /debug/pprof/, at
// net/http/pprof's paths and formats. Off by default: profiles show
// internals an operator should ask for.
func WithPprof(on bool) Option { return optionFunc(func(c *config) { c.pprof = on }) }

// WithMetrics serves h at /metrics (Prometheus text). Without it, or with
// a nil h, /metrics answers 404.
func WithMetrics(h http.Handler) Option { return optionFunc(func(c *config) { c.metrics = h }) }

// Server is the admin listener: a live page at /, and /healthz, /readyz,
// /stats, /stats/golden, /clusters, /routes, /inbound, /config_dump and
// /metrics, all read from a Source, plus what Handle mounts. Every request
// passes the Host check first. It is safe for concurrent use.
type Server struct {
	src   Source
	mux   *http.ServeMux
	ln    net.Listener
	hosts *hosts
	srv   *http.Server
	wg    sync.WaitGroup
	once  sync.Once
}

// New listens on addr (host:port over TCP) and returns a Server reading
// src. It serves once Serve is called.
func New(addr string, src Source, opts ...Option) (*Server, error) {
	var cfg config
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	page, err := newPage()
	if err != nil {
		return nil, err
	}
	var hs []string
	for _, h := range cfg.hosts {
		if CheckHost(h) == nil {
			hs = append(hs, h)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", addr, err)
	}
	s := &Server{src: src, mux: http.NewServeMux(), ln: ln, hosts: newHosts(addr, ln.Addr(), hs)}
	s.routes(page, &cfg)
	s.srv = &http.Server{Handler: s.hosts.check(s.mux), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

func (s *Server) routes(page http.Handler, cfg *config) {
	mux := s.mux
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.HandleFunc("GET /clusters", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, nonNil(s.src.Clusters())) })
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, nonNil(s.src.Routes())) })
	mux.HandleFunc("GET /stats", s.serveStats)
	mux.HandleFunc("GET /stats/golden", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, nonNil(s.src.Golden(time.Now()))) })
	mux.HandleFunc("GET /inbound", s.serveInbound)
	mux.HandleFunc("GET /config_dump", s.serveConfigDump)
	metrics := cfg.metrics
	if metrics == nil {
		metrics = http.NotFoundHandler()
	}
	mux.Handle("GET /metrics", metrics)
	// "/{$}" is the root alone: other unknown paths stay 404s rather
	// than serving the page.
	mux.Handle("GET /{$}", page)
	if cfg.pprof {
		mountPprof(mux)
	}
}

// Handle mounts h at pattern (http.ServeMux's syntax) beside the
// built-in endpoints, behind the same Host check. It may be called while
// the server serves; a pattern that conflicts with one already mounted
// is an error.
func (s *Server) Handle(pattern string, h http.Handler) (err error) {
	defer func() {
		// ServeMux reports a conflict by panicking: an error here.
		if r := recover(); r != nil {
			err = fmt.Errorf("admin: Handle(%q): %v", pattern, r)
		}
	}()
	s.mux.Handle(pattern, h)
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// ServeHTTP answers one request as the listener would, Host check
// included.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.srv.Handler.ServeHTTP(w, r) }

// Serve starts serving in the background; Close stops it.
func (s *Server) Serve() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(s.ln)
	}()
}

// Close closes the listener and every connection, and waits for Serve's
// goroutine. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.srv.Close()
		s.ln.Close()
		s.wg.Wait()
	})
	return err
}

// serveReady is /readyz: 200 with the source's detail while it is ready,
// 503 with why not.
func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	detail, err := s.src.Ready(time.Now())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if detail == "" {
		w.Write([]byte("ok\n"))
		return
	}
	fmt.Fprintf(w, "ok\n%s\n", detail)
}

func (s *Server) serveStats(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	st := Stats{Status: s.src.Status(now), NowUnixMs: now.UnixMilli(), Requests: s.src.Requests()}
	if st.Requests == nil {
		st.Requests = map[string]uint64{}
	}
	writeJSON(w, st)
}

func (s *Server) serveInbound(w http.ResponseWriter, _ *http.Request) {
	in := s.src.Inbound()
	in.Listeners = nonNil(in.Listeners)
	in.Decisions = nonNil(in.Decisions)
	writeJSON(w, in)
}

// serveConfigDump is /config_dump: Envoy's ConfigDump JSON by default, so
// tools that read Envoy's dump read Weft's; ?format=weft is Weft's own
// view (?resources=false leaves the resources' bodies out).
func (s *Server) serveConfigDump(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	switch q.Get("format") {
	case "weft":
		writeJSON(w, nonNil(s.src.Resources(q.Get("resources") != "false")))
		return
	case "", "envoy":
	default:
		http.Error(w, fmt.Sprintf("admin: /config_dump: format=%q: want envoy (the default) or weft", q.Get("format")), http.StatusBadRequest)
		return
	}
	b, err := s.src.ConfigDump()
	if err != nil {
		http.Error(w, "admin: /config_dump: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if b == nil {
		b = []byte("{\n  \"configs\": []\n}\n")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// writeJSON writes v indented, for people reading the endpoint with curl.
func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
