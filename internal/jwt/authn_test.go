package jwt_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// istioRequirement is what istiod requires of a workload with one
// RequestAuthentication rule: any(origins-0, allow_missing).
var istioRequirement = jwt.IstioRequirement([]string{"origins-0"})

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// TestAttacks is the validation of one provider as istiod configures it
// (issuer, audiences, the default locations, "allow requests with
// missing JWT, but reject those with invalid JWT"), against tokens an
// attacker would send. Envoy's jwt_authn is the reference: "If the JWT
// is invalid, the request is rejected (401)"; a request without a token
// passes, and authorization decides.
func TestAttacks(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	other := jwttest.NewIssuer(t, "https://other.test")
	p := &jwt.Provider{Name: "origins-0", Issuer: iss.Name, Audiences: []string{"weft"}, JWKS: iss.JWKS(),
		PayloadKey: "payload", ClockSkew: jwt.DefaultClockSkew}
	a, err := jwt.NewAuthenticator([]*jwt.Provider{p}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	pubPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(iss.RSA.Public())
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	good := jwttest.Claims{"aud": "weft"}
	valid := iss.Token(t, good)
	now := time.Now()
	for _, tc := range []struct {
		name    string
		header  http.Header
		query   string
		wantErr error // nil: allowed
		wantSub string
	}{
		{name: "valid RS256", header: bearer(valid), wantSub: "user"},
		{name: "valid ES256", header: bearer(iss.Sign(t, jose.ES256, "ec", good))},
		{name: "valid EdDSA", header: bearer(iss.Sign(t, jose.EdDSA, "ed", good))},
		{name: "valid PS256 without kid", header: bearer(jwttest.SignWith(t, jose.PS256, iss.RSA, "", jwttest.Claims{"iss": iss.Name, "sub": "ps", "aud": "weft"})),
			wantErr: jwt.ErrKeyNotFound}, // the rsa key declares RS256
		{name: "missing token", header: http.Header{}},
		{name: "other auth scheme", header: http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}},
		{name: "bearer lower case", header: http.Header{"Authorization": {"bearer " + valid}}, wantSub: "user"},
		{name: "access_token param", query: "access_token=" + url.QueryEscape(valid), wantSub: "user"},
		{name: "alg none", header: bearer(jwttest.Unsigned(jwttest.Claims{"iss": iss.Name, "sub": "admin", "aud": "weft"})), wantErr: jwt.ErrMalformed},
		{name: "HS256 with the public key as secret", header: bearer(jwttest.SignWith(t, jose.HS256, pubPEM, "rsa",
			jwttest.Claims{"iss": iss.Name, "sub": "admin", "aud": "weft", "exp": now.Add(time.Hour).Unix()})), wantErr: jwt.ErrMalformed},
		{name: "HS256 with the JWK as secret", header: bearer(jwttest.SignWith(t, jose.HS256, iss.JWKS(), "",
			jwttest.Claims{"iss": iss.Name, "sub": "admin", "aud": "weft"})), wantErr: jwt.ErrMalformed},
		{name: "expired", header: bearer(iss.Token(t, jwttest.Claims{"aud": "weft", "exp": now.Add(-2 * time.Minute).Unix()})), wantErr: jwt.ErrExpired},
		{name: "expired within the skew", header: bearer(iss.Token(t, jwttest.Claims{"aud": "weft", "exp": now.Add(-30 * time.Second).Unix()})), wantSub: "user"},
		{name: "nbf in the future", header: bearer(iss.Token(t, jwttest.Claims{"aud": "weft", "nbf": now.Add(5 * time.Minute).Unix()})), wantErr: jwt.ErrNotYetValid},
		{name: "nbf within the skew", header: bearer(iss.Token(t, jwttest.Claims{"aud": "weft", "nbf": now.Add(30 * time.Second).Unix()})), wantSub: "user"},
		{name: "exp as a string", header: bearer(iss.Token(t, jwttest.Claims{"aud": "weft", "exp": "never"})), wantErr: jwt.ErrMalformed},
		{name: "wrong issuer", header: bearer(other.Token(t, good)), wantErr: jwt.ErrIssuer},
		{name: "right issuer name, other keys", header: bearer(other.Token(t, jwttest.Claims{"iss": iss.Name, "aud": "weft"})), wantErr: jwt.ErrKeyNotFound},
		{name: "wrong audience", header: bearer(iss.Token(t, jwttest.Claims{"aud": "other"})), wantErr: jwt.ErrAudience},
		{name: "no audience", header: bearer(iss.Token(t, nil)), wantErr: jwt.ErrAudience},
		{name: "audience in a list", header: bearer(iss.Token(t, jwttest.Claims{"aud": []string{"x", "weft"}})), wantSub: "user"},
		{name: "kid not found", header: bearer(iss.Sign(t, jose.RS256, "nope", good)), wantErr: jwt.ErrKeyNotFound},
		{name: "kid of another key type", header: bearer(iss.Sign(t, jose.RS256, "ec", good)), wantErr: jwt.ErrKeyNotFound},
		{name: "signature tampered", header: bearer(tamper(valid)), wantErr: jwt.ErrKeyNotFound},
		{name: "malformed", header: bearer("not.a.jwt"), wantErr: jwt.ErrMalformed},
		{name: "two segments", header: bearer("abc.def"), wantErr: jwt.ErrMalformed},
		{name: "empty bearer", header: http.Header{"Authorization": {"Bearer "}}, wantErr: jwt.ErrMalformed},
		{name: "oversized", header: bearer(strings.Repeat("a", jwt.MaxTokenSize+1)), wantErr: jwt.ErrTooLarge},
		{name: "oversized but signed", header: bearer(iss.Token(t, jwttest.Claims{"aud": "weft", "pad": strings.Repeat("x", jwt.MaxTokenSize)})), wantErr: jwt.ErrTooLarge},
		{name: "two Authorization headers", header: http.Header{"Authorization": {"Bearer " + valid, "Bearer " + valid}}, wantErr: jwt.ErrAmbiguous},
		{name: "valid and invalid Authorization headers", header: http.Header{"Authorization": {"Bearer " + valid, "Bearer x.y.z"}}, wantErr: jwt.ErrAmbiguous},
		{name: "header and param disagree", header: bearer(valid), query: "access_token=" + url.QueryEscape(iss.Token(t, jwttest.Claims{"aud": "weft", "sub": "admin"})), wantErr: jwt.ErrAmbiguous},
		{name: "header and param agree", header: bearer(valid), query: "access_token=" + url.QueryEscape(valid), wantSub: "user"},
		{name: "param twice", query: "access_token=" + valid + "&access_token=" + valid, wantErr: jwt.ErrAmbiguous},
		{name: "payload not an object", header: bearer(signRaw(t, iss, []byte(`[1,2]`))), wantErr: jwt.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.Authenticate(context.Background(), &jwt.Request{Header: tc.header, RawQuery: tc.query}, &istioRequirement)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want the request allowed", err)
			}
			if tc.wantSub != "" {
				v := res.First()
				if v == nil || v.Subject != tc.wantSub || v.Principal() != iss.Name+"/"+tc.wantSub {
					t.Fatalf("verified %+v, want sub %q", v, tc.wantSub)
				}
				md := res.Metadata()[jwt.FilterName]["payload"].(map[string]any)
				if md["sub"] != tc.wantSub {
					t.Errorf("metadata payload %v, want sub %q", md, tc.wantSub)
				}
			}
		})
	}
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	sig := []byte(parts[2])
	if sig[0] == 'A' {
		sig[0] = 'B'
	} else {
		sig[0] = 'A'
	}
	return parts[0] + "." + parts[1] + "." + string(sig)
}

func signRaw(t *testing.T, iss *jwttest.Issuer, payload []byte) string {
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: iss.RSA}, (&jose.SignerOptions{}).WithHeader("kid", "rsa"))
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

// TestRequirements is Envoy's requirement tree over two providers sharing
// the Authorization header, as istiod configures two RequestAuthentication
// rules: a token of either issuer passes, a token of neither fails, none
// passes.
func TestRequirements(t *testing.T) {
	i1, i2, i3 := jwttest.NewIssuer(t, "https://one.test"), jwttest.NewIssuer(t, "https://two.test"), jwttest.NewIssuer(t, "https://three.test")
	ps := []*jwt.Provider{
		{Name: "origins-0", Issuer: i1.Name, JWKS: i1.JWKS(), PayloadKey: "payload"},
		{Name: "origins-1", Issuer: i2.Name, JWKS: i2.JWKS(), PayloadKey: "payload", Headers: []jwt.HeaderLocation{{Name: "X-Jwt"}}},
	}
	a, err := jwt.NewAuthenticator(ps, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	istio := jwt.IstioRequirement([]string{"origins-0", "origins-1"})
	only1 := jwt.Requirement{Kind: jwt.RequireProvider, Provider: "origins-0"}
	both := jwt.Requirement{Kind: jwt.RequireAll, Subs: []jwt.Requirement{only1, {Kind: jwt.RequireProvider, Provider: "origins-1"}}}
	anything := jwt.Requirement{Kind: jwt.AllowMissingOrFailed}
	aud := jwt.Requirement{Kind: jwt.RequireProvider, Provider: "origins-0", Audiences: []string{"api"}}
	t1, t2, t3 := i1.Token(t, nil), i2.Token(t, nil), i3.Token(t, nil)
	for _, tc := range []struct {
		name   string
		req    jwt.Requirement
		header http.Header
		ok     bool
		n      int // verified tokens
	}{
		{"istio: issuer one", istio, bearer(t1), true, 1},
		{"istio: issuer two in its header", istio, http.Header{"X-Jwt": {t2}}, true, 1},
		{"istio: issuer two in the other's header", istio, bearer(t2), false, 0},
		{"istio: unknown issuer", istio, bearer(t3), false, 0},
		{"istio: none", istio, http.Header{}, true, 0},
		{"istio: both", istio, http.Header{"Authorization": {"Bearer " + t1}, "X-Jwt": {t2}}, true, 2},
		{"istio: one valid, one invalid", istio, http.Header{"Authorization": {"Bearer " + t1}, "X-Jwt": {"x.y.z"}}, true, 1},
		{"provider: missing", only1, http.Header{}, false, 0},
		{"provider: present", only1, bearer(t1), true, 1},
		{"all: one missing", both, bearer(t1), false, 0},
		{"all: both", both, http.Header{"Authorization": {"Bearer " + t1}, "X-Jwt": {t2}}, true, 2},
		{"allow missing or failed: invalid", anything, bearer("x.y.z"), true, 0},
		{"allow missing or failed: valid", anything, bearer(t1), true, 1},
		{"provider and audiences: absent aud", aud, bearer(t1), false, 0},
		{"provider and audiences: aud", aud, bearer(i1.Token(t, jwttest.Claims{"aud": "api"})), true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := a.Authenticate(context.Background(), &jwt.Request{Header: tc.header}, &tc.req)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil && len(res.Verified) != tc.n {
				t.Errorf("%d tokens verified, want %d", len(res.Verified), tc.n)
			}
		})
	}
	if err := istio.Check(func(n string) bool { return n == "origins-0" }); err == nil {
		t.Error("Check accepted a requirement naming an unknown provider")
	}
}

// syncBuffer is a log sink for the fetcher's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRemoteJWKS fetches a key set over HTTP, keeps the last good keys
// when the server fails, logs the failure once, shares one cache between
// providers naming the same URI, and leaves no goroutine after Close.
func TestRemoteJWKS(t *testing.T) {
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	srv := jwttest.NewServer(t, iss.JWKS())
	var logs syncBuffer
	reg := jwt.NewRegistry(nil, slog.New(slog.NewTextHandler(&logs, nil)))
	defer reg.Close()
	p := &jwt.Provider{Name: "p", Issuer: iss.Name, JWKSURI: srv.URI(), CacheDuration: 100 * time.Millisecond, FetchTimeout: 2 * time.Second}
	a, err := jwt.NewAuthenticator([]*jwt.Provider{p}, reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := jwt.NewAuthenticator([]*jwt.Provider{{Name: "q", Issuer: iss.Name, JWKSURI: srv.URI(), CacheDuration: 100 * time.Millisecond, FetchTimeout: 2 * time.Second}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	req := jwt.Requirement{Kind: jwt.RequireProvider, Provider: "p"}
	tok := iss.Token(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Authenticate(ctx, &jwt.Request{Header: bearer(tok)}, &req); err != nil {
		t.Fatalf("first request (waits for the first fetch): %v", err)
	}

	srv.Set(http.StatusInternalServerError, []byte("down"))
	before := srv.Fetches.Load()
	waitFor(t, func() bool { return srv.Fetches.Load() >= before+3 })
	if _, err := a.Authenticate(ctx, &jwt.Request{Header: bearer(tok)}, &req); err != nil {
		t.Fatalf("with the JWKS server failing, the last good keys must serve: %v", err)
	}
	if n := strings.Count(logs.String(), "fetching JWKS failed"); n != 1 {
		t.Errorf("%d failure logs for one failing state, want 1:\n%s", n, logs.String())
	}
	// A rotated key set replaces the old one on the next fetch.
	next := jwttest.NewIssuer(t, iss.Name)
	srv.Set(http.StatusOK, next.JWKS())
	waitFor(t, func() bool {
		_, err := a.Authenticate(ctx, &jwt.Request{Header: bearer(next.Token(t, nil))}, &req)
		return err == nil
	})
	if !strings.Contains(logs.String(), "recovered") {
		t.Errorf("no recovery log:\n%s", logs.String())
	}
	// An oversized body is refused, and the keys in force stay.
	srv.Set(http.StatusOK, bytes.Repeat([]byte(" "), jwt.MaxJWKSSize+10))
	before = srv.Fetches.Load()
	waitFor(t, func() bool { return srv.Fetches.Load() >= before+2 })
	if _, err := a.Authenticate(ctx, &jwt.Request{Header: bearer(next.Token(t, nil))}, &req); err != nil {
		t.Fatalf("after an oversized JWKS: %v", err)
	}
	if !strings.Contains(logs.String(), "larger than") {
		t.Errorf("the oversized body was not logged:\n%s", logs.String())
	}
	a.Close()
	b.Close()
}

// TestRemoteJWKSUnreachable: with no key ever fetched, a token is refused
// (fail closed) and a request without one still passes.
func TestRemoteJWKSUnreachable(t *testing.T) {
	srv := jwttest.NewServer(t, nil)
	srv.Set(http.StatusNotFound, nil)
	reg := jwt.NewRegistry(nil, nil)
	defer reg.Close()
	iss := jwttest.NewIssuer(t, "https://issuer.test")
	a, err := jwt.NewAuthenticator([]*jwt.Provider{{Name: "origins-0", Issuer: iss.Name, JWKSURI: srv.URI(), FetchTimeout: time.Second}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	if _, err := a.Authenticate(ctx, &jwt.Request{Header: bearer(iss.Token(t, nil))}, &istioRequirement); !errors.Is(err, jwt.ErrKeysNotFetched) {
		t.Errorf("err = %v, want %v", err, jwt.ErrKeysNotFetched)
	}
	if _, err := a.Authenticate(ctx, &jwt.Request{Header: http.Header{}}, &istioRequirement); err != nil {
		t.Errorf("no token: %v", err)
	}
}

func TestProviderValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    jwt.Provider
		want string
	}{
		{"no keys", jwt.Provider{Name: "p"}, "no JWKS"},
		{"both", jwt.Provider{Name: "p", JWKS: []byte(`{}`), JWKSURI: "http://x"}, "both"},
		{"bad uri", jwt.Provider{Name: "p", JWKSURI: "file:///etc/passwd"}, "not http"},
		{"bad jwks", jwt.Provider{Name: "p", JWKS: []byte(`{"keys": 1}`)}, "not a JSON key set"},
		{"symmetric only", jwt.Provider{Name: "p", JWKS: []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)}, "no usable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
