package jwt_test

import (
	"context"
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
)

// BenchmarkAuthenticate is the cost a request pays for its token under
// istiod's requirement: none, RS256 (2048-bit), ES256, EdDSA.
func BenchmarkAuthenticate(b *testing.B) {
	iss := jwttest.NewIssuer(b, "https://issuer.test")
	a, err := jwt.NewAuthenticator([]*jwt.Provider{{Name: "origins-0", Issuer: iss.Name, JWKS: iss.JWKS(), PayloadKey: "payload",
		ClockSkew: jwt.DefaultClockSkew}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	req := jwt.IstioRequirement([]string{"origins-0"})
	for _, tc := range []struct{ name, token string }{
		{"none", ""},
		{"RS256", iss.Sign(b, jose.RS256, "rsa", nil)},
		{"ES256", iss.Sign(b, jose.ES256, "ec", nil)},
		{"EdDSA", iss.Sign(b, jose.EdDSA, "ed", nil)},
	} {
		h := http.Header{}
		if tc.token != "" {
			h.Set("Authorization", "Bearer "+tc.token)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Authenticate(context.Background(), &jwt.Request{Header: h}, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
