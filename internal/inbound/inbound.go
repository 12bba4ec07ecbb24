// Package inbound decides what an inbound connection and an inbound
// request get under a control plane's server Listener: the filter chain
// (and so the TLS mode) of a connection, and the inbound route and RBAC
// filters of a request. It is the one implementation the HTTP and gRPC
// servers of a mesh both call, each through a thin adapter that turns its
// protocol's request into a [Request] and the [Decision] into its
// protocol's answer, so the two protocols cannot judge one configuration
// differently.
//
// Everything here is a pure function of immutable xDS model values: safe
// for concurrent use, no allocation on the allow path beyond what route
// matching does.
package inbound

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/xds"
)

// ErrNoFilterChain is returned for a connection no filter chain of the
// listener matches, when the listener has no default chain either: Envoy
// closes such a connection, and so do Weft's servers.
var ErrNoFilterChain = errors.New("inbound: no filter chain matches the connection")

// Chain returns the filter chain that serves a connection, whose TLS field
// is the transport the connection must speak (nil: plaintext).
func Chain(l *xds.ServerListener, c xds.ConnInfo) (*xds.FilterChain, error) {
	fc := l.Select(c)
	if fc == nil {
		return nil, ErrNoFilterChain
	}
	return fc, nil
}

// Request is one inbound request as both protocols present it.
type Request struct {
	// Conn is the connection the request arrived on; Conn.TLS is whether
	// it speaks TLS.
	Conn xds.ConnInfo
	// Host is the request's authority (HTTP Host, gRPC :authority).
	Host string
	// Req holds the method, headers and the path to judge: the adapter
	// decides which path that is (HTTP: the normalized path, so "//admin"
	// cannot slip past a rule for "/admin"; gRPC: the method path exactly
	// as grpc-go dispatches it).
	Req *xds.Request
	// PeerCert is the caller's verified leaf certificate; nil for
	// plaintext or a caller that presented none.
	PeerCert *x509.Certificate
	// ServerName is the TLS SNI ("" without TLS).
	ServerName string
	// Ctx bounds the wait for a remote JWKS's first fetch.
	Ctx context.Context
	// Authenticators holds the live validator of each chain's jwt_authn
	// filter (their key sets are fetched and cached); a chain with a
	// filter and no authenticator refuses tokens it would have to check.
	Authenticators map[*xds.FilterChain]*jwt.Authenticator
	// Auth are the tokens already verified for the request (by the local
	// RequestAuthentication policy); the chain's own are added to them.
	Auth *jwt.Result
}

// Outcome is what the listener makes of a request.
type Outcome uint8

// Outcomes. Each protocol maps them to its own answer: HTTP to a status
// code, gRPC to a status (see the mesh's adapters).
const (
	Allowed Outcome = iota
	// NoFilterChain: the connection matches no filter chain.
	NoFilterChain
	// TransportMismatch: the connection does not speak what its chain's
	// transport socket requires (plaintext on a chain requiring TLS, no
	// client certificate on one requiring it). It arises for a connection
	// accepted under an earlier configuration (PERMISSIVE changed to
	// STRICT): the connection must not go on being served in plaintext.
	TransportMismatch
	// RoutesPending: the chain's RDS route configuration has not arrived.
	RoutesPending
	// NoRoute: no virtual host or route of the chain matches.
	NoRoute
	// NotNonForwarding: the matched route's action is not the
	// non-forwarding action a server route must have (gRFC A36).
	NotNonForwarding
	// Denied: an RBAC filter denied the request.
	Denied
	// Unauthenticated: the jwt_authn filter refused the request's token
	// (HTTP 401, gRPC UNAUTHENTICATED).
	Unauthenticated
)

// Decision is the outcome and, for Denied, the filter and policy that
// decided (for the operator's log, never the caller).
type Decision struct {
	Outcome Outcome
	// Filter is the denying RBAC filter; Policy the policy that matched
	// ("" when an ALLOW filter matched none).
	Filter *xds.RBAC
	Policy string
	// Err is why the token was refused, for Unauthenticated.
	Err error
	// Auth are the verified tokens (r.Auth and the chain's), for the
	// handler; nil when none.
	Auth *jwt.Result
}

// Decide applies the filter chain for r's connection, its inbound routes
// and its RBAC filters, in Envoy's order. routes holds the RDS route
// configurations by name, for chains that do not carry theirs inline.
// record, when non-nil, is told every enforcing RBAC filter's verdict
// (filters in LOG mode are evaluated but neither recorded nor enforced),
// for metrics.
func Decide(l *xds.ServerListener, routes map[string]*xds.RouteConfig, r *Request, record func(allowed bool, policy string)) Decision {
	fc := l.Select(r.Conn)
	switch {
	case fc == nil:
		return Decision{Outcome: NoFilterChain}
	case fc.TLS != nil && (!r.Conn.TLS || fc.TLS.RequireClientCert && r.PeerCert == nil):
		return Decision{Outcome: TransportMismatch}
	}
	rc := fc.RouteConfig
	if rc == nil {
		rc = routes[fc.RouteConfigName]
	}
	if rc == nil {
		return Decision{Outcome: RoutesPending}
	}
	rt, ok := rc.Match(r.Host, r.Req)
	switch {
	case !ok:
		return Decision{Outcome: NoRoute}
	case rt.Action.Kind != xds.ActionNonForwarding:
		return Decision{Outcome: NotNonForwarding}
	}
	auth, orig := r.Auth, r.Req
	if fc.JWT != nil {
		if req := fc.JWT.Requirement(r.Host, r.Req); req != nil {
			a := r.Authenticators[fc]
			if a == nil {
				return Decision{Outcome: Unauthenticated, Err: errNoAuthenticator}
			}
			ctx := r.Ctx
			if ctx == nil {
				ctx = context.Background()
			}
			res, err := a.Authenticate(ctx, &jwt.Request{Method: r.Req.Method, Header: r.Req.Header, RawQuery: r.Req.RawQuery}, req)
			if err != nil {
				return Decision{Outcome: Unauthenticated, Err: err}
			}
			auth = auth.Merge(res)
			if len(res.Headers) > 0 {
				// Envoy removes a token not forwarded before the filters
				// after jwt_authn: the RBAC filters judge the request
				// the handler will see.
				stripped := *r.Req
				stripped.Header = StripTokens(r.Req.Header, res)
				r2 := *r
				r2.Req = &stripped
				r = &r2
			}
		}
	}
	if len(fc.RBAC) == 0 {
		return Decision{Outcome: Allowed, Auth: auth}
	}
	in := xds.RBACInput{Host: r.Host, Request: r.Req, Local: r.Conn.Local, Remote: r.Conn.Remote, PeerCert: r.PeerCert, ServerName: r.ServerName}
	md := auth.Metadata()
	for i, f := range fc.RBAC {
		// Envoy's filters run in order: an RBAC filter before jwt_authn
		// sees only what was verified before the chain.
		if fc.JWT != nil && i < fc.JWT.RBACBefore {
			in.Metadata, in.Request = r.Auth.Metadata(), orig
		} else {
			in.Metadata, in.Request = md, r.Req
		}
		allowed, policy := f.Allowed(&in)
		if f.Action == xds.RBACLog {
			continue
		}
		if record != nil {
			record(allowed, policy)
		}
		if !allowed {
			return Decision{Outcome: Denied, Filter: f, Policy: policy}
		}
	}
	return Decision{Outcome: Allowed, Auth: auth}
}

var errNoAuthenticator = errors.New("inbound: the chain's JWT providers are not ready")

// StripTokens returns h without the headers that carried verified tokens
// of providers that do not forward them (Envoy removes them before the
// request goes on), or h itself when there are none. h is not modified.
func StripTokens(h http.Header, res *jwt.Result) http.Header {
	if res == nil || len(res.Headers) == 0 {
		return h
	}
	out := h.Clone()
	for _, name := range res.Headers {
		out.Del(name)
	}
	return out
}
