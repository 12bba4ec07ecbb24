package security

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/weftmesh/weft/internal/jwt"
)

// AuthorizationHandler returns middleware that evaluates every request with
// e before calling next. A denied request gets 403 Forbidden with a generic
// body (the reason and policy are logged, never sent); denied and audited
// requests are logged at Info level ([WithLogger]).
//
// The caller's ID comes from [PeerID] on the request context when the mesh
// has set it, otherwise from the request's TLS state ([PeerIDFromTLS]); the
// server's TLS config must therefore verify peers, as [ServerTLSConfig]
// does.
//
// When e is a [RequestAuthenticator] (a [PolicySet] or [PolicyWatcher]
// holding RequestAuthentication documents) and no [AuthenticationHandler]
// ran before, the request's tokens are validated first: 401 for an
// invalid one, and next gets the verified tokens in its context.
//
// The request first goes through [NormalizeRequest]: a path that cannot be
// normalized gets 400 Bad Request, and e judges, and next receives, the
// normalized request, so no spelling of a path reaches next under a
// different path than the one e judged. The handler is safe for concurrent
// use.
func AuthorizationHandler(e PolicyEvaluator, next http.Handler, opts ...Option) http.Handler {
	o := newOptions(opts)
	a, _ := e.(RequestAuthenticator)
	return NormalizeRequest(&authzHandler{e: e, authn: a, next: next, logger: o.logger}, opts...)
}

type authzHandler struct {
	e PolicyEvaluator
	// authn is e as a RequestAuthenticator, asserted once; nil when it is
	// not one.
	authn  RequestAuthenticator
	next   http.Handler
	logger *slog.Logger
}

func (h *authzHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The decision is a function of its own, so that its Request is off
	// the stack while next runs: an HTTP/2 server runs every request on a
	// new goroutine, whose stack grows by copying as the handlers nest.
	if r = h.admit(w, r); r != nil {
		h.next.ServeHTTP(w, r)
	}
}

// admit decides r: the request next is to see, or nil when r was answered
// (refused, or its token invalid).
//
//go:noinline
func (h *authzHandler) admit(w http.ResponseWriter, r *http.Request) *http.Request {
	req := Request{
		Method: r.Method,
		// r is normalized: NormalizePath of its escaped path is r.URL.Path,
		// the path next sees.
		Path:    r.URL.EscapedPath(),
		Host:    r.Host,
		Headers: r.Header,
	}
	if id, ok := PeerID(r.Context()); ok {
		req.SourceID = id
	} else if id, ok := PeerIDFromTLS(r.TLS); ok {
		req.SourceID = id
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.SourceIP = ap.Addr()
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		req.Port = addrPort(la)
	}
	if auth, ok := jwt.FromContext(r.Context()); ok {
		req.auth = auth // verified before this handler
	} else if a := h.authn; a != nil && authnNeeded(a) {
		req.Path = r.URL.RequestURI() // with the query, where a token may be
		err := a.AuthenticateRequest(r.Context(), &req)
		req.Path = r.URL.EscapedPath() // a token in the query must not reach the log
		if err != nil {
			refuseToken(h.logger, w, r, err)
			return nil
		}
		r = withTokens(r, req.auth)
		req.Headers = r.Header
	}
	d := h.e.Evaluate(&req)
	logDecision(r.Context(), h.logger, &req, d)
	if !d.Allow {
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return nil
	}
	return r
}

func addrPort(a net.Addr) int {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.Port
	case nil:
		return 0
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return int(ap.Port())
	}
	return 0
}

// NormalizeRequest returns middleware that hands next each request with its
// path in the one form authorization judges ([NormalizePath]), so that a
// rule and the handler behind it see the same path, as Envoy forwards the
// path it normalized. Without it, a router such as http.ServeMux routes on
// the escaped path ("/admin/%2e%2e/x" reaches a handler for "/admin/")
// while a rule judges the decoded one ("/x").
//
// A request whose path cannot be normalized unambiguously (see
// [NormalizePath]: an encoded slash or backslash, a raw backslash, NUL, a
// malformed or doubly encoded escape, a path not starting with "/", a path
// over 64 KiB), and a CONNECT request without a path, gets 400 Bad Request
// with a generic body; the reason is logged at Debug level ([WithLogger]).
//
// Any other request reaches next as a shallow copy whose URL.Path is the
// normalized path, URL.RawPath is empty (so URL.EscapedPath re-escapes it),
// RequestURI is that escaped path plus the original query, and URL.Scheme,
// URL.Host and URL.User are empty: an absolute-form request line
// ("GET http://host/a/../b HTTP/1.1") is served as origin-form, its
// authority staying in r.Host. An already normal request is passed on
// as it is, without allocating. "OPTIONS *" passes unchanged.
//
// [AuthorizationHandler] applies it itself; the mesh's server chain applies
// it before any authorization. The handler is safe for concurrent use.
func NormalizeRequest(next http.Handler, opts ...Option) http.Handler {
	o := newOptions(opts)
	return &normalizeHandler{next: next, logger: o.logger}
}

type normalizeHandler struct {
	next   http.Handler
	logger *slog.Logger
}

// maxLoggedTarget bounds the request target quoted in a log line.
const maxLoggedTarget = 256

func (h *normalizeHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if nr := h.normalize(w, r); nr != nil {
		h.next.ServeHTTP(w, nr)
	}
}

// normalize is r normalized, or nil when r was refused. Not inlined, so
// that its locals are off the stack while next runs (see authzHandler).
//
//go:noinline
func (h *normalizeHandler) normalize(w http.ResponseWriter, r *http.Request) *http.Request {
	nr, err := normalizeRequest(r)
	if err != nil {
		target := r.RequestURI
		if len(target) > maxLoggedTarget {
			target = target[:maxLoggedTarget] + "..."
		}
		h.logger.DebugContext(r.Context(), "security: request refused", "status", http.StatusBadRequest,
			"method", r.Method, "target", target, "error", err)
		http.Error(w, http.StatusText(http.StatusBadRequest), http.StatusBadRequest)
		return nil
	}
	return nr
}

// normalizeRequest returns r with its path normalized, r itself when it is
// already normal.
func normalizeRequest(r *http.Request) (*http.Request, error) {
	u := r.URL
	if u == nil {
		return nil, errors.New("security: request without a URL")
	}
	if r.Method == http.MethodOptions && u.Path == "*" && u.Opaque == "" && u.Host == "" && u.RawQuery == "" {
		return r, nil
	}
	if u.Opaque != "" {
		return nil, errors.New("security: request target has no path")
	}
	esc := u.EscapedPath()
	if esc == "" {
		// Absolute form without a path ("GET http://host HTTP/1.1") means
		// "/"; CONNECT's authority form names no resource at all.
		if r.Method == http.MethodConnect {
			return nil, errors.New("security: CONNECT without a path")
		}
		esc = "/"
	}
	p, err := normalizeEscapedPath(esc)
	if err != nil {
		return nil, err
	}
	if p == u.Path && u.RawPath == "" && u.Scheme == "" && u.Host == "" && u.User == nil && sameRequestURI(r.RequestURI, esc, u) {
		return r, nil
	}
	nu := *u
	nu.Scheme, nu.Opaque, nu.User, nu.Host, nu.OmitHost = "", "", nil, "", false
	nu.Path, nu.RawPath = p, ""
	nr := r.WithContext(r.Context()) // a shallow copy
	nr.URL = &nu
	nr.RequestURI = nu.RequestURI()
	return nr, nil
}

// sameRequestURI reports whether uri is the origin-form target of u, whose
// escaped path is esc.
func sameRequestURI(uri, esc string, u *url.URL) bool {
	rest, ok := strings.CutPrefix(uri, esc)
	switch {
	case !ok:
		return false
	case u.RawQuery == "" && !u.ForceQuery:
		return rest == ""
	}
	return len(rest) == len(u.RawQuery)+1 && rest[0] == '?' && rest[1:] == u.RawQuery
}
