package mesh

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
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
// (RFC 6265 path-match), as A55 says. It is HTTP only: gRPC channels to
// mesh services do not read or set it.

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
	if ttl < 0 {
		return nil, fmt.Errorf("ttl %v is negative", ttl)
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
func (p *pickTransport) session(req *http.Request) *xds.SessionCookie {
	var c *xds.SessionCookie
	if p.route == nil {
		c = p.t.m.cfg.session
	} else if p.t.m.xds.sessions.Load() {
		c, _ = req.Context().Value(sessionKey{}).(*xds.SessionCookie)
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
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	resp.Header.Add("Set-Cookie", v)
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
