package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/internal/inbound"
	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/security"
)

// Inbound HTTP under xDS: when the bootstrap names a
// server_listener_resource_name_template, an HTTP server of the mesh follows
// the control plane's inbound Listener for its address, as grpc-go's
// xDS-managed gRPC server does: the filter chain for the connection, its
// inbound routes, and its RBAC filters (what istiod sends for
// AuthorizationPolicy and PeerAuthentication) decide every request, before
// the local WEFT_AUTHZ_POLICY, which must allow it as well.
//
// Until the listener is known a request waits for it, bounded by the
// request's context and the xDS client's resource timeout. When the control
// plane says the listener does not exist, the server has no xDS policy and
// serves with its local one. When the control plane cannot be reached and
// no version is known, requests are refused (503): an unknown policy is not
// an empty one.

// serverAddrKey carries the address of the listener a Mesh server accepted
// a connection on, as its server listener resource name needs it.
type serverAddrKey struct{}

// inboundXDS holds the server listeners the mesh's HTTP servers follow, by
// listening address.
type inboundXDS struct {
	x         *xdsPath
	template  string
	keys      *jwt.Registry                               // the JWKS caches of the chains' jwt_authn filters
	listeners atomic.Pointer[map[string]*inboundListener] // copy on write
	mu        sync.Mutex
	closed    bool
}

// inboundListener is one server Listener and the route configurations its
// filter chains name over RDS.
type inboundListener struct {
	in    *inboundXDS
	name  string
	ready chan struct{}
	once  sync.Once
	state atomic.Pointer[inboundState]

	mu        sync.Mutex // guards the watches
	cancelLDS func()
	rds       map[string]func() // route configuration name -> cancel
	routes    map[string]*xds.RouteConfig
	listener  *xds.ServerListener
	// auth are the validators of listener's jwt_authn filters (authFor
	// is the listener they were built for); replaced ones are closed.
	auth    map[*xds.FilterChain]*jwt.Authenticator
	authFor *xds.ServerListener
}

// inboundState is what requests read: immutable once published.
type inboundState struct {
	exists   bool
	err      error // no version known and the control plane failed
	listener *xds.ServerListener
	routes   map[string]*xds.RouteConfig
	auth     map[*xds.FilterChain]*jwt.Authenticator
}

func newInboundXDS(x *xdsPath, template string) *inboundXDS {
	in := &inboundXDS{x: x, template: template, keys: jwt.NewRegistry(nil, x.m.log)}
	empty := map[string]*inboundListener{}
	in.listeners.Store(&empty)
	return in
}

// listener returns the watch of the server listener for addr, starting it
// on first use; nil once closed.
func (in *inboundXDS) listener(addr string) *inboundListener {
	if l := (*in.listeners.Load())[addr]; l != nil {
		return l
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	cur := *in.listeners.Load()
	if l := cur[addr]; l != nil || in.closed {
		return l
	}
	name := xds.PopulateTemplate(in.template, addr)
	l := &inboundListener{in: in, name: name, ready: make(chan struct{}), rds: map[string]func(){}, routes: map[string]*xds.RouteConfig{}}
	next := make(map[string]*inboundListener, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[addr] = l
	in.listeners.Store(&next)
	l.cancelLDS = in.x.client.Watch(xds.ListenerType, name, &inboundWatcher{l: l})
	return l
}

func (in *inboundXDS) close() {
	in.mu.Lock()
	in.closed = true
	ls := *in.listeners.Load()
	in.mu.Unlock()
	for _, l := range ls {
		l.mu.Lock()
		l.cancelLDS()
		for _, cancel := range l.rds {
			cancel()
		}
		l.rds = nil
		closeAuth(l.auth)
		l.auth = nil
		l.mu.Unlock()
	}
	in.keys.Close()
}

func closeAuth(auth map[*xds.FilterChain]*jwt.Authenticator) {
	for _, a := range auth {
		a.Close()
	}
}

// authenticatorsLocked builds the validators of the listener's jwt_authn
// filters, once per listener version. The new ones take their remote key
// sets from the registry before the old ones let go of them, so an update
// that keeps a provider keeps its cached keys.
func (l *inboundListener) authenticatorsLocked() {
	if l.authFor == l.listener {
		return
	}
	old := l.auth
	l.auth, l.authFor = nil, l.listener
	chains := append([]*xds.FilterChain{l.listener.Default}, l.listener.FilterChains...)
	for _, fc := range chains {
		if fc == nil || fc.JWT == nil {
			continue
		}
		a, err := jwt.NewAuthenticator(fc.JWT.Providers, l.in.keys)
		if err != nil {
			// Translation validated the providers; a chain left without
			// a validator refuses every token it would have to check.
			l.in.x.m.log.Error("weft: inbound JWT providers", "listener", l.name, "chain", fc.Name, "error", err)
			continue
		}
		if l.auth == nil {
			l.auth = map[*xds.FilterChain]*jwt.Authenticator{}
		}
		l.auth[fc] = a
	}
	closeAuth(old)
}

// publishLocked makes the current listener and routes what requests see,
// once every route configuration the listener names has arrived.
func (l *inboundListener) publishLocked() {
	if l.listener == nil {
		return
	}
	for name := range l.rds {
		if l.routes[name] == nil {
			return // the previous state serves until the set is complete
		}
	}
	routes := make(map[string]*xds.RouteConfig, len(l.routes))
	for k, v := range l.routes {
		routes[k] = v
	}
	l.authenticatorsLocked()
	l.state.Store(&inboundState{exists: true, listener: l.listener, routes: routes, auth: l.auth})
	l.once.Do(func() { close(l.ready) })
}

type inboundWatcher struct{ l *inboundListener }

func (w *inboundWatcher) OnUpdate(r xds.Resource) {
	l := w.l
	x := l.in.x
	x.logUnapplied("Listener", r)
	lis := r.(*xds.Listener)
	if lis.Server == nil {
		w.OnError(errors.New("is a client (API) listener, not a server listener"))
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.rds == nil {
		return // closed
	}
	want := map[string]bool{}
	chains := append([]*xds.FilterChain{lis.Server.Default}, lis.Server.FilterChains...)
	for _, fc := range chains {
		if fc != nil && fc.RouteConfigName != "" {
			want[fc.RouteConfigName] = true
		}
	}
	for name, cancel := range l.rds {
		if !want[name] {
			cancel()
			delete(l.rds, name)
			delete(l.routes, name)
		}
	}
	l.listener = lis.Server
	for name := range want {
		if l.rds[name] == nil {
			l.rds[name] = x.client.Watch(xds.RouteConfigType, name, &inboundRouteWatcher{l: l, name: name})
		}
	}
	l.publishLocked()
}

func (w *inboundWatcher) OnError(err error) {
	l := w.l
	l.in.x.countRejected("Listener", err)
	l.in.x.m.log.Warn("weft: inbound listener", "name", l.name, "error", err)
	if l.state.Load() == nil {
		l.state.Store(&inboundState{exists: true, err: fmt.Errorf("weft: inbound listener %q: %w", l.name, err)})
		l.once.Do(func() { close(l.ready) })
	}
}

// OnDoesNotExist: the control plane has no inbound configuration for this
// server, so the server keeps its local policy only.
func (w *inboundWatcher) OnDoesNotExist() {
	l := w.l
	l.in.x.m.log.Info("weft: no inbound listener from the control plane; serving with the local policy only", "name", l.name)
	l.mu.Lock()
	l.listener = nil
	l.mu.Unlock()
	l.state.Store(&inboundState{exists: false})
	l.once.Do(func() { close(l.ready) })
}

type inboundRouteWatcher struct {
	l    *inboundListener
	name string
}

func (w *inboundRouteWatcher) OnUpdate(r xds.Resource) {
	w.l.in.x.logUnapplied("RouteConfiguration", r)
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	if w.l.rds == nil || w.l.rds[w.name] == nil {
		return
	}
	w.l.routes[w.name] = r.(*xds.RouteConfig)
	w.l.publishLocked()
}

func (w *inboundRouteWatcher) OnError(err error) {
	w.l.in.x.countRejected("RouteConfiguration", err)
}

func (w *inboundRouteWatcher) OnDoesNotExist() {
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	delete(w.l.routes, w.name)
}

// xdsInbound is the inbound middleware enforcing the control plane's
// server listener.
func (m *Mesh) xdsInbound(next http.Handler) http.Handler {
	in := m.inbound
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		addr, _ := r.Context().Value(serverAddrKey{}).(string)
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if addr == "" && local != nil {
			addr = local.String()
		}
		if addr == "" {
			// Not served by net/http (a test calling ServeHTTP): there is
			// no listener to look up.
			next.ServeHTTP(w, r)
			return
		}
		l := in.listener(addr)
		if l == nil {
			http.Error(w, "server closing", http.StatusServiceUnavailable)
			return
		}
		select {
		case <-l.ready:
		case <-r.Context().Done():
			http.Error(w, "inbound configuration pending", http.StatusServiceUnavailable)
			return
		}
		st := l.state.Load()
		switch {
		case st.err != nil:
			m.limited.DebugContext(r.Context(), "weft: inbound request refused", "listener", l.name, "status", http.StatusServiceUnavailable, "error", st.err)
			http.Error(w, "inbound configuration unavailable", http.StatusServiceUnavailable)
			return
		case !st.exists:
			next.ServeHTTP(w, r)
			return
		}
		status, msg, auth := m.inboundDecision(l.name, st, r, local)
		if status != 0 {
			// The body stays generic, as Envoy's do: the listener's name
			// is for the operator's log, not the caller.
			if status != http.StatusForbidden {
				m.limited.DebugContext(r.Context(), "weft: inbound request refused", "listener", l.name, "status", status, "reason", msg,
					"method", r.Method, "path", r.URL.Path)
			}
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			if status == http.StatusMisdirectedRequest {
				// No filter chain, or not the transport the chain now
				// requires: the connection would not be accepted today,
				// so the client must open another one.
				w.Header().Set("Connection", "close")
			}
			http.Error(w, msg, status)
			return
		}
		next.ServeHTTP(w, withAuth(r, auth))
	})
}

// withAuth hands the handler the request with its verified tokens in the
// context and, for providers that do not forward them, without the
// headers that carried them.
func withAuth(r *http.Request, auth *jwt.Result) *http.Request {
	if prev, _ := jwt.FromContext(r.Context()); prev == auth {
		return r // nothing new, and no allocation on the common path
	}
	r = r.WithContext(jwt.NewContext(r.Context(), auth))
	if h := inbound.StripTokens(r.Header, auth); len(h) != len(r.Header) {
		r.Header = h
	}
	return r
}

// inboundDecision is the HTTP adapter of inbound.Decide: it applies the
// listener's filter chain, routes and RBAC to r; status 0 admits it.
// listener is the resource's name, for the log.
func (m *Mesh) inboundDecision(listener string, st *inboundState, r *http.Request, local net.Addr) (status int, msg string, auth *jwt.Result) {
	ci := xds.ConnInfo{TLS: r.TLS != nil}
	if local != nil {
		ci.Local = addrPortOf(local)
	}
	ci.Remote, _ = netip.ParseAddrPort(r.RemoteAddr)
	req := xds.RequestFromHTTP(r)
	// The chain normalized r (security.NormalizeRequest) before this: routes
	// and rules judge r.URL.Path, the path the handler will see, so
	// "//admin" or "/x/%2e%2e/admin" cannot slip past a rule for "/admin".
	p := r.URL.Path
	req.Path = p
	in := inbound.Request{Conn: ci, Host: r.Host, Req: &req, Ctx: r.Context(), Authenticators: st.auth}
	in.Auth, _ = jwt.FromContext(r.Context())
	if r.TLS != nil {
		in.ServerName = r.TLS.ServerName
		if len(r.TLS.PeerCertificates) > 0 {
			in.PeerCert = r.TLS.PeerCertificates[0]
		}
	}
	d := inbound.Decide(st.listener, st.routes, &in, func(allowed bool, policy string) {
		m.metrics.AuthzDecision(r.Context(), allowed, policy)
		m.recordXDSDecision(r.Context(), "http", allowed, policy, r.Method, p, ci.Remote)
		m.tapAuthz(r.Context(), allowed, policy)
	})
	switch d.Outcome {
	case inbound.Allowed:
		return 0, "", d.Auth
	case inbound.NoFilterChain:
		return http.StatusMisdirectedRequest, "no inbound filter chain for this connection", nil
	case inbound.TransportMismatch:
		return http.StatusMisdirectedRequest, "the inbound filter chain requires another transport for this connection", nil
	case inbound.RoutesPending:
		return http.StatusServiceUnavailable, "inbound routes pending", nil
	case inbound.NoRoute:
		return http.StatusNotFound, "no inbound route", nil
	case inbound.NotNonForwarding:
		return http.StatusServiceUnavailable, "inbound route is not a non-forwarding route", nil
	case inbound.Unauthenticated:
		// Envoy's jwt_authn answers 401 with a fixed body; the reason is
		// for the operator's log.
		m.log.InfoContext(r.Context(), "weft: request refused by xDS jwt_authn", "listener", listener, "error", d.Err,
			"method", r.Method, "path", p, "source_ip", ci.Remote.Addr().String())
		return http.StatusUnauthorized, "Jwt verification fails", nil
	}
	src, _ := security.PeerID(r.Context())
	m.limited.InfoContext(r.Context(), "weft: request denied by xDS RBAC", "listener", listener, "filter", d.Filter.FilterName, "action", d.Filter.Action.String(),
		"policy", d.Policy, "method", r.Method, "path", p, "source_id", src.String(), "source_ip", ci.Remote.Addr().String())
	return http.StatusForbidden, "RBAC: access denied", nil
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if s, ok := a.(servedAddr); ok {
		a = s.Addr
	}
	if t, ok := a.(*net.TCPAddr); ok {
		return t.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// withServerAddr is an http.Server BaseContext recording the listener's
// address for xdsInbound.
func withServerAddr(ln net.Listener) func(net.Listener) context.Context {
	addr := ln.Addr().String()
	return func(net.Listener) context.Context {
		return context.WithValue(context.Background(), serverAddrKey{}, addr)
	}
}
