package mesh

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

// Cookie session affinity, as gRFC A55 and Envoy's stateful session filter
// with CookieBasedSessionState: a request carrying the session cookie goes
// to the endpoint it names (base64 of host:port) while that endpoint is in
// the service's endpoint set, serving and not ejected; any other request
// is balanced as usual, and its response carries a Set-Cookie naming the
// endpoint that served it. A caller that keeps cookies (an http.Client
// with a Jar, or a gateway that hands cookies on to browsers) so stays on
// one endpoint across endpoint-set changes, and moves, with a new cookie,
// only when its endpoint leaves, drains, fails health or is ejected. A
// retry of a failed attempt is sent elsewhere and re-pins the session.
//
// The cookie only applies to requests whose path is within its path
// (RFC 6265 path-match), as A55 says; a gRPC call's path is its method,
// "/package.Service/Method".
//
// gRPC channels to mesh services not configured by xDS (DialGRPC("orders"))
// honour WithSessionAffinity too, with A55's interceptors: a call whose
// outgoing metadata carries the cookie in a "cookie" entry goes to the
// endpoint it names, and the response header metadata the application
// reads (a grpc.Header call option; a stream's Header) gains a
// "set-cookie" entry when the call went elsewhere or carried no cookie.
// The caller keeps the cookie, as a browser or cookie jar would, and sends
// it back. One difference from HTTP is A55's: a call whose endpoint is
// still making its first connection waits for it rather than going
// elsewhere. xds:/// channels run grpc-go's xDS client, which has no
// session affinity.

// WithSessionAffinity pins each caller session to one endpoint with a
// cookie named cookieName (path "/", Max-Age ttl; 0 makes it a session
// cookie) for services not configured by xDS, whose stateful session
// filter says this for xDS services. It overrides WEFT_SESSION_COOKIE and
// WEFT_SESSION_COOKIE_TTL.
func WithSessionAffinity(cookieName string, ttl time.Duration) Option {
	return optionFunc(func(c *config) error {
		s, err := newSessionCookie(cookieName, ttl)
		if err != nil {
			return fmt.Errorf("mesh: WithSessionAffinity: %w", err)
		}
		c.session = s
		return nil
	})
}

func newSessionCookie(name string, ttl time.Duration) (*xds.SessionCookie, error) {
	if err := (&http.Cookie{Name: name, Value: "x"}).Valid(); name == "" || err != nil {
		return nil, fmt.Errorf("%q is not a cookie name", name)
	}
	if ttl != 0 {
		if err := checkDuration(ttl, minCookieTTL); err != nil {
			return nil, fmt.Errorf("ttl %w (Max-Age counts whole seconds; 0 makes a session cookie)", err)
		}
	}
	return &xds.SessionCookie{Name: name, Path: "/", TTL: ttl}, nil
}

// sessionFromEnv reads WEFT_SESSION_COOKIE and WEFT_SESSION_COOKIE_TTL.
func sessionFromEnv(getenv func(string) string, c *config) error {
	name, ttlStr := getenv(EnvSessionCookie), getenv(EnvSessionCookieTTL)
	if name == "" {
		if ttlStr != "" {
			return &EnvError{Var: EnvSessionCookieTTL, Value: ttlStr, Err: fmt.Errorf("set %s too", EnvSessionCookie)}
		}
		return nil
	}
	var ttl time.Duration
	if ttlStr != "" {
		d, err := time.ParseDuration(ttlStr)
		if err != nil || d < 0 {
			return &EnvError{Var: EnvSessionCookieTTL, Value: ttlStr, Err: errors.New("want a duration such as 1h, 0 for a session cookie")}
		}
		if d != 0 && d < minCookieTTL {
			return &EnvError{Var: EnvSessionCookieTTL, Value: ttlStr, Err: fmt.Errorf("%v is below the minimum of %v (Max-Age counts whole seconds; 0 makes a session cookie)", d, minCookieTTL)}
		}
		ttl = d
	}
	s, err := newSessionCookie(name, ttl)
	if err != nil {
		return &EnvError{Var: EnvSessionCookie, Value: name, Err: err}
	}
	c.session = s
	return nil
}

// sessionKey carries an xDS route's session cookie to the pick.
type sessionKey struct{}

// withSession returns req carrying cookie for the pick, or req itself.
func withSession(req *http.Request, cookie *xds.SessionCookie) *http.Request {
	if cookie == nil {
		return req
	}
	return req.WithContext(context.WithValue(req.Context(), sessionKey{}, cookie))
}

// xdsSession is the session cookie of a request on an xDS route: the
// route's StatefulSessionPerRoute, else the listener's filter.
func xdsSession(listener *xds.SessionCookie, route *xds.Route) *xds.SessionCookie {
	if s := route.Session; s != nil {
		if s.Disabled {
			return nil
		}
		return s.Cookie
	}
	return listener
}

// session returns the cookie that applies to an attempt, or nil.
func (p *pickTransport) session(ctx context.Context, req *http.Request) *xds.SessionCookie {
	var c *xds.SessionCookie
	if p.plan == nil {
		c = p.t.m.cfg.session
	} else if p.t.m.xds.sessions.Load() {
		c, _ = ctx.Value(sessionKey{}).(*xds.SessionCookie)
	}
	if c == nil || !pathMatch(req.URL.Path, c.Path) {
		return nil
	}
	return c
}

// sessionOverride returns the endpoint address req's session cookie names,
// or "" when it has none or the value is not base64 of host:port.
func sessionOverride(req *http.Request, c *xds.SessionCookie) string {
	ck, err := req.Cookie(c.Name)
	if err != nil {
		return ""
	}
	b, err := base64.StdEncoding.DecodeString(ck.Value)
	if err != nil {
		return ""
	}
	addr := string(b)
	if i := strings.LastIndexByte(addr, ':'); i <= 0 || i == len(addr)-1 {
		return ""
	}
	return addr
}

// setSessionCookie adds a Set-Cookie naming addr to resp, unless the
// request's cookie already named it.
func setSessionCookie(resp *http.Response, c *xds.SessionCookie, had, addr string) {
	if resp == nil || had == addr {
		return
	}
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	resp.Header.Add("Set-Cookie", sessionCookie(c, addr))
}

// sessionCookie is the Set-Cookie value of c naming addr.
func sessionCookie(c *xds.SessionCookie, addr string) string {
	ck := http.Cookie{Name: c.Name, Value: base64.StdEncoding.EncodeToString([]byte(addr)), Path: c.Path, HttpOnly: true}
	if c.TTL > 0 {
		ck.MaxAge = int((c.TTL + time.Second - 1) / time.Second)
	}
	v := ck.String()
	for _, a := range c.Attributes {
		v += "; " + a.Name
		if a.Value != "" {
			v += "=" + a.Value
		}
	}
	return v
}

// pathMatch is RFC 6265 section 5.1.4's path-match of a request path
// against a cookie path.
func pathMatch(reqPath, cookiePath string) bool {
	if reqPath == "" {
		reqPath = "/"
	}
	switch {
	case reqPath == cookiePath:
		return true
	case !strings.HasPrefix(reqPath, cookiePath):
		return false
	case strings.HasSuffix(cookiePath, "/"):
		return true
	default:
		return reqPath[len(cookiePath)] == '/'
	}
}

// pickInfoSession fills info's override from req's cookie when c is set.
func pickInfoSession(info *balancer.PickInfo, req *http.Request, c *xds.SessionCookie) {
	if c != nil {
		info.Override = sessionOverride(req, c)
	}
}

// grpcSession is cookie session affinity on a gRPC channel to a mesh
// service (see the top of this file): A55's filter, as a unary and a
// stream interceptor. It runs innermost, beneath retries and hedging, so
// that each attempt reads the cookie and is pinned on its own, and an
// attempt that retries a failed one goes elsewhere (the endpoint is
// recorded in the call's resilience.Attempts), as on the HTTP path.
type grpcSession struct{ c *xds.SessionCookie }

// grpcSessionOptions returns the session interceptors of a channel to a
// mesh service, or nothing when session affinity is off.
func (m *Mesh) grpcSessionOptions() []grpc.DialOption {
	if m.cfg.session == nil {
		return nil
	}
	s := grpcSession{m.cfg.session}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(s.unary), grpc.WithChainStreamInterceptor(s.stream)}
}

// pick returns the pick arguments of a call of method, from the cookie in
// ctx's outgoing metadata, or nil when the cookie's path does not cover
// method.
func (s grpcSession) pick(ctx context.Context, method string) *balancer.GRPCPick {
	if !pathMatch(method, s.c.Path) {
		return nil
	}
	p := &balancer.GRPCPick{}
	if v := metadata.ValueFromOutgoingContext(ctx, "cookie"); len(v) > 0 {
		p.Override = sessionOverride(&http.Request{Header: http.Header{"Cookie": v}}, s.c)
	}
	if a := resilience.AttemptsFromContext(ctx); a != nil {
		p.Tried = a
	}
	return p
}

// setCookie returns the set-cookie entry for a call picked by p: "" when
// nothing was picked or the call went where its cookie said. As in A55,
// the call's status does not matter.
func (s grpcSession) setCookie(p *balancer.GRPCPick) string {
	addr := p.Picked()
	if addr == "" || addr == p.Override {
		return ""
	}
	return sessionCookie(s.c, addr)
}

// addSetCookie adds v to the header metadata md points to, as a copy:
// grpc-go may share the map it stored there.
func addSetCookie(md *metadata.MD, v string) {
	h := md.Copy()
	h.Append("set-cookie", v)
	*md = h
}

func (s grpcSession) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	p := s.pick(ctx, method)
	if p == nil {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	err := invoker(balancer.ContextWithGRPCPick(ctx, p), method, req, reply, cc, opts...)
	if addr := p.Picked(); addr != "" {
		resilience.AttemptsFromContext(ctx).Record(addr)
	}
	if v := s.setCookie(p); v != "" {
		for _, o := range opts {
			if h, ok := o.(grpc.HeaderCallOption); ok && h.HeaderAddr != nil {
				addSetCookie(h.HeaderAddr, v)
			}
		}
	}
	return err
}

func (s grpcSession) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	p := s.pick(ctx, method)
	if p == nil {
		return streamer(ctx, desc, cc, method, opts...)
	}
	cs, err := streamer(balancer.ContextWithGRPCPick(ctx, p), desc, cc, method, opts...)
	if err != nil {
		return nil, err
	}
	ss := &sessionStream{ClientStream: cs, s: s, p: p, serverStreams: desc.ServerStreams}
	for _, o := range opts {
		if h, ok := o.(grpc.HeaderCallOption); ok && h.HeaderAddr != nil {
			ss.headers = append(ss.headers, h.HeaderAddr)
		}
	}
	return ss, nil
}

// sessionStream adds the set-cookie entry to what its Header returns and,
// once the stream has ended, to grpc.Header call options, which grpc-go
// fills then.
type sessionStream struct {
	grpc.ClientStream
	s             grpcSession
	p             *balancer.GRPCPick
	serverStreams bool
	headers       []*metadata.MD
	once          sync.Once
}

// Header returns the response header metadata, with the set-cookie entry:
// the stream is committed to an endpoint once headers have arrived.
func (ss *sessionStream) Header() (metadata.MD, error) {
	md, err := ss.ClientStream.Header()
	if err != nil {
		return md, err
	}
	if v := ss.s.setCookie(ss.p); v != "" {
		addSetCookie(&md, v)
	}
	return md, nil
}

func (ss *sessionStream) RecvMsg(m any) error {
	err := ss.ClientStream.RecvMsg(m)
	// The stream has ended when RecvMsg fails and, for a call with one
	// response, when it returns that response.
	if len(ss.headers) > 0 && (err != nil || !ss.serverStreams) {
		ss.once.Do(func() {
			if v := ss.s.setCookie(ss.p); v != "" {
				for _, h := range ss.headers {
					addSetCookie(h, v)
				}
			}
		})
	}
	return err
}
