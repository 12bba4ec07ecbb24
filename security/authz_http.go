package security

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
)

// AuthorizationHandler returns middleware that evaluates every request with
// e before calling next. A denied request gets 403 Forbidden with a generic
// body (the reason and policy are logged, never sent); denied and audited
// requests are logged at Info level ([WithLogger]).
//
// The caller's ID comes from [PeerID] on the request context when the mesh
// has set it, otherwise from the request's TLS state ([PeerIDFromTLS]); the
// server's TLS config must therefore verify peers, as [ServerTLSConfig]
// does. The path matched is the escaped request path, normalized by
// [NormalizePath]. The handler is safe for concurrent use.
func AuthorizationHandler(e PolicyEvaluator, next http.Handler, opts ...Option) http.Handler {
	o := newOptions(opts)
	return &authzHandler{e: e, next: next, logger: o.logger}
}

type authzHandler struct {
	e      PolicyEvaluator
	next   http.Handler
	logger *slog.Logger
}

func (h *authzHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	req := Request{
		Method:  r.Method,
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
	d := h.e.Evaluate(&req)
	logDecision(r.Context(), h.logger, &req, d)
	if !d.Allow {
		http.Error(w, http.StatusText(http.StatusForbidden), http.StatusForbidden)
		return
	}
	h.next.ServeHTTP(w, r)
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
