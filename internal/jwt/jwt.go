// Package jwt validates the JSON Web Tokens of inbound requests: Envoy's
// jwt_authn HTTP filter (envoy.extensions.filters.http.jwt_authn.v3), which
// is what istiod makes of an Istio RequestAuthentication. Both ways a
// RequestAuthentication reaches a Weft server end here: internal/xds
// translates the jwt_authn filter of an inbound listener into [Provider]s
// and [Requirement]s, and package security translates RequestAuthentication
// YAML the way istiod does. One validator serves both, and the payloads it
// verifies are what internal/rbac's metadata matchers read (Istio's
// requestPrincipals and request.auth.* conditions).
//
// Signatures and keys are go-jose's (github.com/go-jose/go-jose/v4). Only
// the asymmetric algorithms Istio accepts are allowed (RS*, PS*, ES*,
// EdDSA): "none" and the HMAC algorithms are refused before any key is
// looked at, so a public key can never be used as an HMAC secret.
//
// Provider, Requirement and the key sets are immutable once built and safe
// for concurrent use; see [Registry] for the JWKS caches' lifecycle.
package jwt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// FilterName is the jwt_authn filter's name, under which Envoy (and Weft)
// publish verified payloads as dynamic metadata, and which istiod's RBAC
// metadata matchers name.
const FilterName = "envoy.filters.http.jwt_authn"

// MaxTokenSize bounds the length of a token: a longer one is refused before
// it is decoded, so a request cannot make the server base64-decode and
// parse megabytes. Real tokens are a few KiB at most.
const MaxTokenSize = 16 << 10

// DefaultClockSkew is Envoy's clock_skew_seconds default: exp and nbf are
// checked with this much tolerance.
const DefaultClockSkew = 60 * time.Second

// DefaultFetchTimeout and DefaultCacheDuration are istiod's defaults for a
// remote JWKS (a 5 s timeout, a 5 min cache).
const (
	DefaultFetchTimeout  = 5 * time.Second
	DefaultCacheDuration = 5 * time.Minute
)

// Algorithms are the signature algorithms a token may use: the asymmetric
// ones Istio documents as supported.
var Algorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// HeaderLocation is a header a token is read from: the value after Prefix
// (matched case-insensitively, as an HTTP auth scheme is), or the whole
// value when Prefix is empty.
type HeaderLocation struct {
	Name   string
	Prefix string
}

// Provider is one issuer of tokens a server accepts: Envoy's JwtProvider,
// Istio's JWTRule. Immutable once built.
type Provider struct {
	// Name is the provider's name in Requirements (istiod: "origins-<i>").
	Name string
	// Issuer is the token's required iss; "" accepts any issuer.
	Issuer string
	// Audiences are accepted aud values; empty: aud is not checked.
	Audiences []string
	// Subject, when set, must accept the token's sub (Envoy's subjects).
	Subject func(string) bool
	// Headers, Params and Cookies are where the token is read. All three
	// empty mean Envoy's defaults: "Authorization: Bearer <token>", then
	// the access_token query parameter.
	Headers []HeaderLocation
	Params  []string
	Cookies []string
	// Forward keeps the token in the request the handler sees; false
	// removes the header that carried it, as Envoy does.
	Forward bool
	// PayloadKey is the metadata key the verified payload is published
	// under in FilterName's metadata (Envoy's payload_in_metadata; istiod
	// sets "payload"); "" publishes nothing.
	PayloadKey string
	// SpaceDelimited claims are published as lists of their
	// space-separated words when they are strings (Envoy's
	// normalize_payload_in_metadata), so "scope: a b" matches "a".
	SpaceDelimited []string
	// JWKS is an inline key set (local_jwks); JWKSURI a remote one
	// (remote_jwks), fetched every CacheDuration with FetchTimeout.
	// Exactly one is set.
	JWKS          []byte
	JWKSURI       string
	CacheDuration time.Duration
	FetchTimeout  time.Duration
	// ClockSkew is the tolerance for exp and nbf.
	ClockSkew time.Duration
	// RequireExpiration refuses tokens without exp.
	RequireExpiration bool
}

// Validate checks what translation cannot leave to the request: a key
// source, positive durations, a parsable inline key set.
func (p *Provider) Validate() error {
	switch {
	case p.Name == "":
		return errors.New("provider without a name")
	case len(p.JWKS) > 0 && p.JWKSURI != "":
		return errors.New("both an inline JWKS and a JWKS URI")
	case len(p.JWKS) == 0 && p.JWKSURI == "":
		return errors.New("no JWKS: set an inline key set or a JWKS URI")
	case p.CacheDuration < 0 || p.FetchTimeout < 0 || p.ClockSkew < 0:
		return errors.New("negative duration")
	}
	if p.JWKSURI != "" && !strings.HasPrefix(p.JWKSURI, "http://") && !strings.HasPrefix(p.JWKSURI, "https://") {
		return fmt.Errorf("JWKS URI %q is not http or https", p.JWKSURI)
	}
	for _, h := range p.Headers {
		if h.Name == "" {
			return errors.New("a header location without a name")
		}
	}
	if len(p.JWKS) > 0 {
		if _, err := ParseKeySet(p.JWKS); err != nil {
			return err
		}
	}
	return nil
}

// locations returns where p reads tokens, with Envoy's defaults.
func (p *Provider) locations() ([]HeaderLocation, []string, []string) {
	if len(p.Headers)+len(p.Params)+len(p.Cookies) == 0 {
		return defaultHeaders, defaultParams, nil
	}
	return p.Headers, p.Params, p.Cookies
}

var (
	defaultHeaders = []HeaderLocation{{Name: "Authorization", Prefix: "Bearer "}}
	defaultParams  = []string{"access_token"}
)

// Errors of a token, as Envoy's jwt_authn words its 401s. The details
// are for logs, never for the caller.
var (
	ErrMissing        = errors.New("jwt: no token")
	ErrTooLarge       = fmt.Errorf("jwt: token longer than %d bytes", MaxTokenSize)
	ErrMalformed      = errors.New("jwt: malformed token")
	ErrAmbiguous      = errors.New("jwt: more than one token in the request")
	ErrIssuer         = errors.New("jwt: issuer is not configured")
	ErrAudience       = errors.New("jwt: audiences are not allowed")
	ErrSubject        = errors.New("jwt: subject is not allowed")
	ErrExpired        = errors.New("jwt: token has expired")
	ErrNotYetValid    = errors.New("jwt: token is not yet valid")
	ErrNoExpiration   = errors.New("jwt: token has no expiration")
	ErrKeyNotFound    = errors.New("jwt: no key in the JWKS verifies the token")
	ErrKeysNotFetched = errors.New("jwt: the JWKS is not available")
)

// Verified is one token verified for a provider.
type Verified struct {
	Provider *Provider
	Issuer   string
	Subject  string
	// Audiences is the token's aud; Presenter its azp.
	Audiences []string
	Presenter string
	// Claims is the whole payload, as JSON decodes it.
	Claims map[string]any
}

// Principal is Istio's request principal, "<iss>/<sub>".
func (v *Verified) Principal() string { return v.Issuer + "/" + v.Subject }

// registered are the registered claims read with their JSON types checked.
type registered struct {
	Issuer    string               `json:"iss"`
	Subject   string               `json:"sub"`
	Audience  josejwt.Audience     `json:"aud"`
	Presenter string               `json:"azp"`
	Expiry    *josejwt.NumericDate `json:"exp"`
	NotBefore *josejwt.NumericDate `json:"nbf"`
}

// parsed is a token parsed but not verified.
type parsed struct {
	tok *josejwt.JSONWebToken
	iss string
}

// parse parses a compact JWS with an allowed algorithm and reads its
// (unverified) issuer, which picks the provider among those that share a
// location.
func parse(token string) (*parsed, error) {
	if len(token) > MaxTokenSize {
		return nil, ErrTooLarge
	}
	tok, err := josejwt.ParseSigned(token, Algorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(tok.Headers) != 1 {
		return nil, fmt.Errorf("%w: %d signatures", ErrMalformed, len(tok.Headers))
	}
	var r struct {
		Issuer string `json:"iss"`
	}
	if err := tok.UnsafeClaimsWithoutVerification(&r); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	return &parsed{tok: tok, iss: r.Issuer}, nil
}

// verify checks t's signature with keys and its claims for p at now.
func (p *Provider) verify(t *parsed, keys *KeySet, now time.Time) (*Verified, error) {
	if p.Issuer != "" && t.iss != p.Issuer {
		return nil, ErrIssuer
	}
	if keys == nil {
		return nil, ErrKeysNotFetched
	}
	h := t.tok.Headers[0]
	var payload []byte
	for _, k := range keys.candidates(h.KeyID, h.Algorithm) {
		var raw json.RawMessage
		if err := t.tok.Claims(k.Key, &raw); err == nil {
			payload = raw
			break
		}
	}
	if payload == nil {
		return nil, ErrKeyNotFound
	}
	var reg registered
	if err := json.Unmarshal(payload, &reg); err != nil {
		return nil, fmt.Errorf("%w: claims: %v", ErrMalformed, err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrMalformed)
	}
	skew := p.ClockSkew
	switch {
	case reg.Expiry == nil && p.RequireExpiration:
		return nil, ErrNoExpiration
	case reg.Expiry != nil && now.After(reg.Expiry.Time().Add(skew)):
		return nil, ErrExpired
	case reg.NotBefore != nil && now.Add(skew).Before(reg.NotBefore.Time()):
		return nil, ErrNotYetValid
	}
	if p.Subject != nil && !p.Subject(reg.Subject) {
		return nil, ErrSubject
	}
	if len(p.Audiences) > 0 && !slices.ContainsFunc(reg.Audience, func(a string) bool { return slices.Contains(p.Audiences, a) }) {
		return nil, ErrAudience
	}
	return &Verified{Provider: p, Issuer: reg.Issuer, Subject: reg.Subject, Audiences: reg.Audience, Presenter: reg.Presenter, Claims: claims}, nil
}

// metadataPayload is the payload as published in metadata: the claims,
// with the space-delimited ones split into lists.
func (v *Verified) metadataPayload() map[string]any {
	if len(v.Provider.SpaceDelimited) == 0 {
		return v.Claims
	}
	out := make(map[string]any, len(v.Claims))
	for k, c := range v.Claims {
		if s, ok := c.(string); ok && slices.Contains(v.Provider.SpaceDelimited, k) {
			words := strings.Fields(s)
			l := make([]any, len(words))
			for i, w := range words {
				l[i] = w
			}
			c = l
		}
		out[k] = c
	}
	return out
}
