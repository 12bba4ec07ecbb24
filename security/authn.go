package security

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/jwt"
)

// Istio RequestAuthentication in the policy file.
//
// A RequestAuthentication document (security.istio.io/v1) declares the
// JSON Web Token issuers a workload accepts. As in Istio, it only
// authenticates: a request with an invalid token is refused (401, gRPC
// UNAUTHENTICATED), a request without a token goes on unauthenticated, and
// AuthorizationPolicy decides (requestPrincipals, request.auth.claims).
// The documents are translated as istiod translates them for Envoy's
// jwt_authn filter (pilot/pkg/security/authn): one provider per jwtRule,
// in issuer order, named "origins-<i>", each token required to be valid
// when present, and the verified payload published where the RBAC
// metadata matchers of requestPrincipals read it.

// jwtRuleDoc is Istio's JWTRule.
type jwtRuleDoc struct {
	Issuer                string           `yaml:"issuer"`
	Audiences             []string         `yaml:"audiences"`
	JWKSURI               string           `yaml:"jwksUri"`
	JWKS                  string           `yaml:"jwks"`
	FromHeaders           []jwtHeaderDoc   `yaml:"fromHeaders"`
	FromParams            []string         `yaml:"fromParams"`
	FromCookies           []string         `yaml:"fromCookies"`
	OutputPayloadToHeader string           `yaml:"outputPayloadToHeader"`
	OutputClaimToHeaders  []map[string]any `yaml:"outputClaimToHeaders"`
	ForwardOriginalToken  bool             `yaml:"forwardOriginalToken"`
	Timeout               string           `yaml:"timeout"`
	SpaceDelimitedClaims  []string         `yaml:"spaceDelimitedClaims"`
}

type jwtHeaderDoc struct {
	Name   string `yaml:"name"`
	Prefix string `yaml:"prefix"`
}

// requestAuthn is one RequestAuthentication document.
type requestAuthn struct {
	name  string
	scope policyScope
	rules []*jwt.Provider // names are set when a set is compiled
}

// istioSpaceDelimited are the claims istiod always publishes split on
// spaces (buildSpaceDelimitedClaims).
var istioSpaceDelimited = []string{"scope", "permission"}

func compileRequestAuthn(n int, doc *policyDoc) (*requestAuthn, error) {
	switch doc.APIVersion {
	case "security.istio.io/v1", "security.istio.io/v1beta1":
	default:
		return nil, fmt.Errorf("apiVersion: %q is not security.istio.io/v1 or v1beta1", doc.APIVersion)
	}
	switch {
	case doc.Spec.Action != "":
		return nil, errors.New("spec.action: not a RequestAuthentication field")
	case len(doc.Spec.Rules) > 0:
		return nil, errors.New("spec.rules: not a RequestAuthentication field (jwtRules are)")
	case doc.Spec.Provider != nil:
		return nil, errors.New("spec.provider: not a RequestAuthentication field")
	}
	scope, err := compileScope(doc)
	if err != nil {
		return nil, err
	}
	ra := &requestAuthn{name: policyName(n, doc), scope: scope}
	for i := range doc.Spec.JWTRules {
		p, err := compileJWTRule(&doc.Spec.JWTRules[i])
		if err != nil {
			return nil, fmt.Errorf("spec.jwtRules[%d].%w", i, err)
		}
		ra.rules = append(ra.rules, p)
	}
	return ra, nil
}

func compileJWTRule(r *jwtRuleDoc) (*jwt.Provider, error) {
	switch {
	case r.Issuer == "":
		return nil, fieldError("issuer", errors.New("must be set"))
	case r.OutputPayloadToHeader != "":
		return nil, fieldError("outputPayloadToHeader", errors.New("not supported"))
	case len(r.OutputClaimToHeaders) > 0:
		return nil, fieldError("outputClaimToHeaders", errors.New("not supported"))
	case r.JWKS != "" && r.JWKSURI != "":
		return nil, fieldError("jwks", errors.New("set together with jwksUri; Istio allows only one"))
	case r.JWKS == "" && r.JWKSURI == "":
		// istiod discovers the key set through the issuer's OpenID
		// configuration; Weft asks for it explicitly.
		return nil, fieldError("jwksUri", errors.New("must be set, or jwks (OpenID discovery from the issuer is not supported)"))
	}
	p := &jwt.Provider{
		Issuer: r.Issuer, Audiences: r.Audiences, Params: r.FromParams, Cookies: r.FromCookies,
		Forward: r.ForwardOriginalToken, PayloadKey: "payload", JWKS: []byte(r.JWKS), JWKSURI: r.JWKSURI,
		CacheDuration: jwt.DefaultCacheDuration, FetchTimeout: jwt.DefaultFetchTimeout, ClockSkew: jwt.DefaultClockSkew,
		SpaceDelimited: append(slices.Clone(istioSpaceDelimited), r.SpaceDelimitedClaims...),
	}
	if r.JWKS == "" {
		p.JWKS = nil
	}
	for i, h := range r.FromHeaders {
		if h.Name == "" {
			return nil, fieldError(fmt.Sprintf("fromHeaders[%d].name", i), errors.New("must be set"))
		}
		p.Headers = append(p.Headers, jwt.HeaderLocation{Name: h.Name, Prefix: h.Prefix})
	}
	if r.Timeout != "" {
		d, err := time.ParseDuration(r.Timeout)
		if err != nil || d <= 0 {
			return nil, fieldError("timeout", fmt.Errorf("not a positive duration: %q", r.Timeout))
		}
		p.FetchTimeout = d
	}
	p.Name = "origins-0" // for Validate; renamed when the set is compiled
	if err := p.Validate(); err != nil {
		field := "jwksUri"
		if r.JWKS != "" {
			field = "jwks"
		}
		return nil, fieldError(field, err)
	}
	return p, nil
}

// compileAuthn gives p the providers and requirement istiod would build
// from its RequestAuthentications: every jwtRule, sorted by issuer, named
// origins-<i>.
func (p *PolicySet) compileAuthn() {
	var rules []*jwt.Provider
	for _, ra := range p.authn {
		rules = append(rules, ra.rules...)
	}
	slices.SortStableFunc(rules, func(a, b *jwt.Provider) int { return strings.Compare(a.Issuer, b.Issuer) })
	p.providers, p.requirement = nil, nil
	if len(rules) == 0 {
		return
	}
	names := make([]string, len(rules))
	for i, r := range rules {
		c := *r
		c.Name = fmt.Sprintf("origins-%d", i)
		names[i] = c.Name
		p.providers = append(p.providers, &c)
	}
	req := jwt.IstioRequirement(names)
	p.requirement = &req
}

// RequestAuthenticator validates the JSON Web Tokens of requests, as Istio's
// RequestAuthentication does. [*PolicySet] and [*PolicyWatcher] implement
// it for the RequestAuthentication documents they hold; with none, every
// request passes untouched.
type RequestAuthenticator interface {
	// AuthenticateRequest validates r's tokens (from r.Headers and the
	// query of r.Path) and records the verified ones in r, where Evaluate
	// reads them. An error means the request carries an invalid token and
	// must be refused with 401 (gRPC UNAUTHENTICATED); a request without
	// a token is not an error. ctx bounds the wait for a remote key set's
	// first fetch.
	AuthenticateRequest(ctx context.Context, r *Request) error
}

var (
	_ RequestAuthenticator = (*PolicySet)(nil)
	_ RequestAuthenticator = (*PolicyWatcher)(nil)
)

// authnConfigurer is implemented by the RequestAuthenticators of this
// package: without a RequestAuthentication there is nothing to validate,
// and the request goes on as it came, at no cost.
type authnConfigurer interface{ authnConfigured() bool }

func (p *PolicySet) authnConfigured() bool { return p != nil && p.requirement != nil }

func (w *PolicyWatcher) authnConfigured() bool {
	a := w.authn.Load()
	return a != nil && a.req != nil
}

// authnNeeded reports whether a has tokens to validate.
func authnNeeded(a RequestAuthenticator) bool {
	c, ok := a.(authnConfigurer)
	return !ok || c.authnConfigured()
}

// AuthenticateRequest validates r against the set's RequestAuthentications.
// A PolicySet alone has no key fetcher: its inline key sets (jwks) verify
// tokens, and a provider with a jwksUri refuses every token; the key sets
// of a [PolicyWatcher] are fetched and cached.
func (p *PolicySet) AuthenticateRequest(ctx context.Context, r *Request) error {
	if p == nil || p.requirement == nil {
		return nil
	}
	p.authOnce.Do(func() {
		p.auth, _ = jwt.NewAuthenticator(p.providers, nil) // providers were validated at parse
	})
	return authenticate(ctx, p.auth, p.requirement, r)
}

func authenticate(ctx context.Context, a *jwt.Authenticator, req *jwt.Requirement, r *Request) error {
	if a == nil || req == nil {
		return nil
	}
	q := ""
	if i := strings.IndexByte(r.Path, '?'); i >= 0 {
		q, _, _ = strings.Cut(r.Path[i+1:], "#")
	}
	res, err := a.Authenticate(ctx, &jwt.Request{Method: r.Method, Header: r.Headers, RawQuery: q}, req)
	if err != nil {
		return err
	}
	r.auth = r.auth.Merge(res)
	return nil
}

// watchedAuthn is the validator of the policies a PolicyWatcher has in
// force.
type watchedAuthn struct {
	auth *jwt.Authenticator
	req  *jwt.Requirement
}

// AuthenticateRequest validates r against the RequestAuthentications in
// force, whose remote key sets the watcher fetches and caches (every
// 5 minutes, keeping the last good keys when a fetch fails).
func (w *PolicyWatcher) AuthenticateRequest(ctx context.Context, r *Request) error {
	a := w.authn.Load()
	if a == nil {
		return nil
	}
	return authenticate(ctx, a.auth, a.req, r)
}

// newWatchedAuthn builds the validator of set with the watcher's key
// caches.
func (w *PolicyWatcher) newWatchedAuthn(set *PolicySet) (*watchedAuthn, error) {
	if set == nil || set.requirement == nil {
		return &watchedAuthn{}, nil
	}
	a, err := jwt.NewAuthenticator(set.providers, w.keys)
	if err != nil {
		return nil, fmt.Errorf("security: policy file %s: %w", w.path, err)
	}
	return &watchedAuthn{auth: a, req: set.requirement}, nil
}

// errUnauthenticated carries no detail: the reason is logged.
var errUnauthenticated = status.Error(codes.Unauthenticated, "Jwt verification fails")

// AuthenticationHandler returns middleware that validates every request's
// tokens with a before calling next, as Istio's RequestAuthentication does
// in a sidecar: a request with an invalid token gets 401 with
// "WWW-Authenticate: Bearer" and a generic body (the reason is logged at
// Info, [WithLogger]); any other reaches next with the verified tokens
// in its context ([RequestPrincipal], [RequestClaims]) and, for issuers
// that do not forward the token (forwardOriginalToken, false by default),
// without the header that carried it. [AuthorizationHandler] behind it
// judges requestPrincipals on those tokens without validating again.
// The handler is safe for concurrent use.
func AuthenticationHandler(a RequestAuthenticator, next http.Handler, opts ...Option) http.Handler {
	logger := newOptions(opts).logger
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if authnNeeded(a) {
			if r = authenticateHTTP(a, logger, w, r); r == nil {
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// authenticateHTTP is r with its verified tokens, or nil when r was refused
// for an invalid one. Not inlined, so that its Request is off the stack
// while the next handler runs (see authzHandler.ServeHTTP).
//
//go:noinline
func authenticateHTTP(a RequestAuthenticator, logger *slog.Logger, w http.ResponseWriter, r *http.Request) *http.Request {
	req := Request{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Headers: r.Header}
	if err := a.AuthenticateRequest(r.Context(), &req); err != nil {
		refuseToken(logger, w, r, err)
		return nil
	}
	return withTokens(r, req.auth)
}

// refuseToken answers a request whose token failed verification as
// Envoy's jwt_authn filter does: 401, WWW-Authenticate invalid_token.
func refuseToken(logger *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	logger.InfoContext(r.Context(), "security: request refused: invalid token", "method", r.Method, "path", r.URL.Path, "error", err)
	w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
	http.Error(w, "Jwt verification fails", http.StatusUnauthorized)
}

// withTokens is r with auth in its context and without the headers of
// tokens not forwarded.
func withTokens(r *http.Request, auth *jwt.Result) *http.Request {
	r = r.WithContext(jwt.NewContext(r.Context(), auth))
	if auth != nil && len(auth.Headers) > 0 {
		h := r.Header.Clone()
		for _, name := range auth.Headers {
			h.Del(name)
		}
		r.Header = h
	}
	return r
}

// AuthenticationUnaryInterceptor is [AuthenticationHandler] for unary gRPC
// calls: UNAUTHENTICATED for an invalid token, else the handler runs with
// the verified tokens in its context and, for issuers that do not forward
// the token, without the metadata that carried it.
func AuthenticationUnaryInterceptor(a RequestAuthenticator, opts ...Option) grpc.UnaryServerInterceptor {
	logger := newOptions(opts).logger
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := authenticateGRPC(ctx, a, logger, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// AuthenticationStreamInterceptor is [AuthenticationUnaryInterceptor] for
// streaming calls.
func AuthenticationStreamInterceptor(a RequestAuthenticator, opts ...Option) grpc.StreamServerInterceptor {
	logger := newOptions(opts).logger
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := authenticateGRPC(ss.Context(), a, logger, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &ctxServerStream{ServerStream: ss, ctx: ctx})
	}
}

type ctxServerStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxServerStream) Context() context.Context { return s.ctx }

func authenticateGRPC(ctx context.Context, a RequestAuthenticator, logger *slog.Logger, fullMethod string) (context.Context, error) {
	if !authnNeeded(a) {
		return ctx, nil
	}
	req := grpcRequest(ctx, fullMethod)
	if err := a.AuthenticateRequest(ctx, &req); err != nil {
		logger.InfoContext(ctx, "security: call refused: invalid token", "method", fullMethod, "error", err)
		return ctx, errUnauthenticated
	}
	ctx = jwt.NewContext(ctx, req.auth)
	if req.auth != nil && len(req.auth.Headers) > 0 {
		if md, ok := metadata.FromIncomingContext(ctx); ok {
			md = md.Copy()
			for _, h := range req.auth.Headers {
				delete(md, strings.ToLower(h))
			}
			ctx = metadata.NewIncomingContext(ctx, md)
		}
	}
	return ctx, nil
}
