// Package jwttest issues JSON Web Tokens and serves their key sets, for
// the tests of the packages that validate them. Keys are generated per
// Issuer; nothing here is fit for production use.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Issuer signs tokens with its own keys: an RSA key ("rsa", RS256), an
// EC P-256 key ("ec", ES256) and an Ed25519 key ("ed", EdDSA).
type Issuer struct {
	Name string
	RSA  *rsa.PrivateKey
	EC   *ecdsa.PrivateKey
	Ed   ed25519.PrivateKey
}

// NewIssuer generates an issuer's keys.
func NewIssuer(tb testing.TB, name string) *Issuer {
	tb.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &Issuer{Name: name, RSA: rk, EC: ek, Ed: dk}
}

// JWKS is the issuer's public key set.
func (i *Issuer) JWKS() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: i.RSA.Public(), KeyID: "rsa", Algorithm: string(jose.RS256), Use: "sig"},
		{Key: i.EC.Public(), KeyID: "ec", Algorithm: string(jose.ES256), Use: "sig"},
		{Key: i.Ed.Public(), KeyID: "ed", Algorithm: string(jose.EdDSA), Use: "sig"},
	}}
	b, err := json.Marshal(set)
	if err != nil {
		panic(err)
	}
	return b
}

// Claims are a token's payload; the registered claims are filled in by
// Token when absent: iss (the issuer), sub "user", iat now, exp in an hour.
type Claims map[string]any

// Token signs claims with the issuer's RSA key (kid "rsa", RS256).
func (i *Issuer) Token(tb testing.TB, c Claims) string {
	return i.Sign(tb, jose.RS256, "rsa", c)
}

// Sign signs claims with alg and the issuer's key for it, naming kid.
func (i *Issuer) Sign(tb testing.TB, alg jose.SignatureAlgorithm, kid string, c Claims) string {
	tb.Helper()
	var key crypto.Signer
	switch alg {
	case jose.ES256:
		key = i.EC
	case jose.EdDSA:
		key = i.Ed
	default:
		key = i.RSA
	}
	return SignWith(tb, alg, key, kid, i.fill(c))
}

func (i *Issuer) fill(c Claims) Claims {
	out := Claims{"iss": i.Name, "sub": "user", "iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range c {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

// SignWith signs claims as given with key (any key go-jose signs with,
// including an HMAC secret as []byte).
func SignWith(tb testing.TB, alg jose.SignatureAlgorithm, key any, kid string, c Claims) string {
	tb.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		tb.Fatal(err)
	}
	payload, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// Unsigned is a token with alg "none" and an empty signature.
func Unsigned(c Claims) string {
	enc := base64.RawURLEncoding
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	p, _ := json.Marshal(c)
	return enc.EncodeToString(h) + "." + enc.EncodeToString(p) + "."
}

// Server serves a JWKS over HTTP on 127.0.0.1 and counts the fetches.
type Server struct {
	*httptest.Server
	Fetches atomic.Int64
	body    atomic.Pointer[[]byte]
	status  atomic.Int64
}

// NewServer serves jwks at /jwks until the test ends.
func NewServer(tb testing.TB, jwks []byte) *Server {
	tb.Helper()
	s := &Server{}
	s.Set(http.StatusOK, jwks)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Fetches.Add(1)
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(int(s.status.Load()))
		w.Write(*s.body.Load())
	}))
	tb.Cleanup(s.Close)
	return s
}

// Set changes what the server answers.
func (s *Server) Set(status int, body []byte) {
	s.body.Store(&body)
	s.status.Store(int64(status))
}

// URI is the JWKS URI.
func (s *Server) URI() string { return s.URL + "/jwks" }
