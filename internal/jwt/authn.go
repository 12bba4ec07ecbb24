package jwt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// RequirementKind is what a [Requirement] asks.
type RequirementKind uint8

// Requirement kinds, Envoy's JwtRequirement.
const (
	// RequireProvider: a token valid for Provider (optionally with
	// Audiences overriding the provider's).
	RequireProvider RequirementKind = iota
	// RequireAny: one of Subs.
	RequireAny
	// RequireAll: each of Subs.
	RequireAll
	// AllowMissing: no token, or only valid ones ("allow requests with
	// missing JWT, but reject those with an invalid one").
	AllowMissing
	// AllowMissingOrFailed: anything; valid tokens still count.
	AllowMissingOrFailed
)

// Requirement is Envoy's JwtRequirement tree.
type Requirement struct {
	Kind      RequirementKind
	Provider  string
	Audiences []string // provider_and_audiences; nil: the provider's
	Subs      []Requirement
}

// IstioRequirement is the requirement istiod builds for the providers of
// a workload's RequestAuthentications (convertToEnvoyJwtConfig): each
// provider's token, when present, must be valid. One provider:
// any(p, allow_missing). Several: any(p1, ..., pn, all(any(p1,
// allow_missing), ..., any(pn, allow_missing))), where the leading ORs
// let providers share a location.
func IstioRequirement(names []string) Requirement {
	inner := make([]Requirement, len(names))
	outer := make([]Requirement, 0, len(names)+1)
	for i, n := range names {
		p := Requirement{Kind: RequireProvider, Provider: n}
		inner[i] = Requirement{Kind: RequireAny, Subs: []Requirement{p, {Kind: AllowMissing}}}
		outer = append(outer, p)
	}
	if len(inner) == 1 {
		return inner[0]
	}
	return Requirement{Kind: RequireAny, Subs: append(outer, Requirement{Kind: RequireAll, Subs: inner})}
}

// Check validates r against the provider names known, with depth bounded.
func (r *Requirement) Check(known func(string) bool) error { return r.check(known, 0) }

const maxRequirementDepth = 32

func (r *Requirement) check(known func(string) bool, depth int) error {
	if depth > maxRequirementDepth {
		return fmt.Errorf("requirements nested deeper than %d", maxRequirementDepth)
	}
	switch r.Kind {
	case RequireProvider:
		if !known(r.Provider) {
			return fmt.Errorf("unknown provider %q", r.Provider)
		}
	case RequireAny, RequireAll:
		if len(r.Subs) == 0 {
			return errors.New("empty requirement list")
		}
		for i := range r.Subs {
			if err := r.Subs[i].check(known, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// Request is what validation reads of a request.
type Request struct {
	Method   string
	Header   http.Header // keyed canonically
	RawQuery string
}

// Result is what validation found: the tokens verified, in provider name
// order. An empty Result (no token) is not an error when the requirement
// allows a missing token.
type Result struct {
	Verified []*Verified
	// Headers are the headers that carried a verified token of a
	// provider that does not forward it: the handler must not see them.
	Headers []string
}

// Merge returns the tokens of r and more together; either may be nil.
func (r *Result) Merge(more *Result) *Result {
	switch {
	case r == nil || len(r.Verified) == 0:
		return more
	case more == nil || len(more.Verified) == 0:
		return r
	}
	return &Result{Verified: append(append([]*Verified{}, r.Verified...), more.Verified...),
		Headers: append(append([]string{}, r.Headers...), more.Headers...)}
}

// First is the first verified token, nil when none.
func (r *Result) First() *Verified {
	if r == nil || len(r.Verified) == 0 {
		return nil
	}
	return r.Verified[0]
}

// Metadata is the dynamic metadata of the verified tokens, as Envoy
// publishes it under [FilterName]: each payload under its provider's
// PayloadKey. Nil when nothing is published.
func (r *Result) Metadata() map[string]map[string]any {
	if r == nil {
		return nil
	}
	var md map[string]any
	for _, v := range r.Verified {
		if v.Provider.PayloadKey == "" {
			continue
		}
		if md == nil {
			md = map[string]any{}
		}
		md[v.Provider.PayloadKey] = v.metadataPayload()
	}
	if md == nil {
		return nil
	}
	return map[string]map[string]any{FilterName: md}
}

// Authenticator validates requests against a set of providers, with their
// keys held: inline sets parsed once, remote ones through a [Registry].
// Immutable but for Close; safe for concurrent use.
type Authenticator struct {
	providers map[string]*Provider
	names     []string // sorted
	sources   map[string]keySource
	releases  []func()
	now       func() time.Time
}

// NewAuthenticator builds an authenticator for providers, taking remote
// key sets from reg (nil: remote key sets are never fetched, and their
// providers refuse every token). The
// caller must Close it to release the remote caches.
func NewAuthenticator(providers []*Provider, reg *Registry) (*Authenticator, error) {
	a := &Authenticator{providers: map[string]*Provider{}, sources: map[string]keySource{}, now: time.Now}
	for _, p := range providers {
		if err := p.Validate(); err != nil {
			a.Close()
			return nil, fmt.Errorf("jwt: provider %q: %w", p.Name, err)
		}
		if a.providers[p.Name] != nil {
			a.Close()
			return nil, fmt.Errorf("jwt: provider %q defined twice", p.Name)
		}
		a.providers[p.Name] = p
		a.names = append(a.names, p.Name)
		if len(p.JWKS) > 0 {
			ks, _ := ParseKeySet(p.JWKS) // Validate parsed it
			a.sources[p.Name] = staticKeys{ks}
			continue
		}
		if reg == nil {
			// No fetcher: the provider knows no keys and refuses every
			// token it is asked to verify (fail closed).
			a.sources[p.Name] = staticKeys{}
			continue
		}
		src, release := reg.acquire(p)
		a.sources[p.Name] = src
		a.releases = append(a.releases, release)
	}
	sort.Strings(a.names)
	if reg != nil {
		a.now = reg.now
	}
	return a, nil
}

// Close releases the remote key sets. Idempotent.
func (a *Authenticator) Close() {
	for _, r := range a.releases {
		r()
	}
}

// Authenticate validates r's tokens for req (nil: no requirement, and no
// token is read). It returns the verified tokens, or an error for a
// request to refuse with 401. ctx bounds the wait for a remote key set's
// first fetch.
func (a *Authenticator) Authenticate(ctx context.Context, r *Request, req *Requirement) (*Result, error) {
	if req == nil || a == nil {
		return &Result{}, nil
	}
	s := &session{a: a, r: r, ctx: ctx, done: map[string]outcome{}}
	if err := s.eval(req); err != nil {
		return nil, err
	}
	res := &Result{}
	for _, n := range a.names {
		if o, ok := s.done[n]; ok && o.v != nil {
			res.Verified = append(res.Verified, o.v)
			if !o.v.Provider.Forward && o.header != "" {
				res.Headers = append(res.Headers, o.header)
			}
		}
	}
	return res, nil
}

// outcome is one provider's verdict on the request.
type outcome struct {
	v      *Verified
	err    error // ErrMissing when the provider found no token
	header string
}

type session struct {
	a    *Authenticator
	r    *Request
	ctx  context.Context
	done map[string]outcome
	q    url.Values
}

func (s *session) eval(req *Requirement) error {
	switch req.Kind {
	case RequireProvider:
		o := s.provider(req.Provider)
		if o.err == nil && req.Audiences != nil && !audienceAllowed(o.v.Audiences, req.Audiences) {
			return ErrAudience
		}
		return o.err
	case RequireAny:
		// Every branch is evaluated, as Envoy runs them all, so that each
		// valid token is published whichever branch passes first.
		var first error
		passed := false
		for i := range req.Subs {
			err := s.eval(&req.Subs[i])
			if err == nil {
				passed = true
				continue
			}
			// Envoy reports a present-but-invalid token over a missing one.
			if first == nil || errors.Is(first, ErrMissing) {
				first = err
			}
		}
		if passed {
			return nil
		}
		return first
	case RequireAll:
		for i := range req.Subs {
			if err := s.eval(&req.Subs[i]); err != nil {
				return err
			}
		}
		return nil
	case AllowMissing:
		// Every token found must be valid for a provider that reads it
		// there; with none, the request passes.
		for _, n := range s.a.names {
			o := s.provider(n)
			if o.err != nil && !errors.Is(o.err, ErrMissing) && !errors.Is(o.err, ErrIssuer) {
				return o.err
			}
		}
		for _, tok := range s.allTokens() {
			if !s.validSomewhere(tok) {
				return ErrIssuer
			}
		}
		return nil
	case AllowMissingOrFailed:
		for _, n := range s.a.names {
			s.provider(n)
		}
		return nil
	}
	return fmt.Errorf("jwt: unknown requirement kind %d", req.Kind)
}

func audienceAllowed(got, want []string) bool {
	for _, g := range got {
		for _, w := range want {
			if g == w {
				return true
			}
		}
	}
	return false
}

// provider returns, once per request, provider n's verdict.
func (s *session) provider(n string) outcome {
	if o, ok := s.done[n]; ok {
		return o
	}
	p := s.a.providers[n]
	o := s.verify(p)
	s.done[n] = o
	return o
}

func (s *session) verify(p *Provider) outcome {
	tok, header, err := s.extract(p)
	if err != nil {
		return outcome{err: err}
	}
	t, err := parse(tok)
	if err != nil {
		return outcome{err: err}
	}
	ks := s.a.sources[p.Name].keys(s.ctx)
	v, err := p.verify(t, ks, s.a.now())
	if err != nil {
		return outcome{err: err}
	}
	return outcome{v: v, header: header}
}

// validSomewhere reports whether tok was verified by a provider.
func (s *session) validSomewhere(tok string) bool {
	for _, n := range s.a.names {
		p := s.a.providers[n]
		t, _, err := s.extract(p)
		if err == nil && t == tok && s.done[n].err == nil {
			return true
		}
	}
	return false
}

// allTokens returns every distinct token found at any provider's
// locations.
func (s *session) allTokens() []string {
	var out []string
	for _, n := range s.a.names {
		t, _, err := s.extract(s.a.providers[n])
		if err == nil {
			found := false
			for _, o := range out {
				found = found || o == t
			}
			if !found {
				out = append(out, t)
			}
		}
	}
	return out
}

// extract finds p's token in the request: exactly one distinct token
// across p's locations, else ErrMissing (none) or ErrAmbiguous (more:
// two Authorization headers, or a header and a parameter that disagree).
// A request carrying two tokens is refused rather than judged on one of
// them, since the handler may read the other. header names the header
// the token came from, "" for a parameter or cookie.
func (s *session) extract(p *Provider) (token, header string, err error) {
	headers, params, cookies := p.locations()
	found := func(t, h string) error {
		switch {
		case token == "":
			token, header = t, h
		case token != t:
			return ErrAmbiguous
		}
		return nil
	}
	for _, loc := range headers {
		for _, v := range s.r.Header.Values(loc.Name) {
			t, ok := fromHeader(v, loc.Prefix)
			if !ok {
				continue
			}
			if t == "" {
				return "", "", fmt.Errorf("%w: empty token in header %s", ErrMalformed, loc.Name)
			}
			if err := found(t, loc.Name); err != nil {
				return "", "", err
			}
			if len(s.r.Header.Values(loc.Name)) > 1 {
				return "", "", ErrAmbiguous
			}
		}
	}
	if len(params) > 0 && s.r.RawQuery != "" {
		if s.q == nil {
			q, err := url.ParseQuery(s.r.RawQuery)
			if err != nil {
				return "", "", fmt.Errorf("%w: query: %v", ErrMalformed, err)
			}
			s.q = q
		}
		for _, name := range params {
			vs := s.q[name]
			if len(vs) > 1 {
				return "", "", ErrAmbiguous
			}
			if len(vs) == 1 {
				if err := found(vs[0], ""); err != nil {
					return "", "", err
				}
			}
		}
	}
	if len(cookies) > 0 {
		for _, line := range s.r.Header.Values("Cookie") {
			cs, err := http.ParseCookie(line)
			if err != nil {
				continue
			}
			for _, c := range cs {
				for _, name := range cookies {
					if c.Name == name {
						if err := found(c.Value, ""); err != nil {
							return "", "", err
						}
					}
				}
			}
		}
	}
	if token == "" {
		return "", "", ErrMissing
	}
	if len(token) > MaxTokenSize {
		return "", "", ErrTooLarge
	}
	return token, header, nil
}

// fromHeader returns the token in a header value with prefix (matched
// case-insensitively; an empty prefix takes the whole value). A value
// without the prefix carries no token for this location.
func fromHeader(v, prefix string) (string, bool) {
	if prefix != "" {
		if len(v) < len(prefix) || !strings.EqualFold(v[:len(prefix)], prefix) {
			return "", false
		}
		v = v[len(prefix):]
	}
	return strings.TrimSpace(v), true
}

type ctxKey struct{}

// NewContext returns ctx carrying the verified tokens of its request;
// FromContext reads them back. The mesh's servers set them before the
// handler runs, whether or not a token was found, so that a later stage
// (the local authorization policy) does not validate again.
func NewContext(ctx context.Context, r *Result) context.Context {
	if r == nil {
		r = &Result{}
	}
	return context.WithValue(ctx, ctxKey{}, r)
}

// FromContext returns the tokens verified for ctx's request; ok is false
// when no validation ran.
func FromContext(ctx context.Context) (r *Result, ok bool) {
	r, ok = ctx.Value(ctxKey{}).(*Result)
	return r, ok
}
