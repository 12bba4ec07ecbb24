package jwt_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/jwt/jwttest"
)

// FuzzAuthenticate feeds arbitrary Authorization values and queries to
// the validator of an istiod-style provider: whatever the input, it must
// not panic, and anything it accepts must be a token the issuer signed.
// The seed corpus is in testdata/fuzz/FuzzAuthenticate; a valid token is
// added here, as its key is generated per run.
func FuzzAuthenticate(f *testing.F) {
	iss := jwttest.NewIssuer(f, "https://issuer.test")
	a, err := jwt.NewAuthenticator([]*jwt.Provider{{Name: "origins-0", Issuer: iss.Name, JWKS: iss.JWKS(), PayloadKey: "payload",
		ClockSkew: jwt.DefaultClockSkew}}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(a.Close)
	f.Add("Bearer "+iss.Token(f, jwttest.Claims{"sub": "fuzz"}), "")
	f.Add("", "access_token="+iss.Token(f, jwttest.Claims{"sub": "fuzz"}))
	f.Fuzz(func(t *testing.T, authz, query string) {
		h := http.Header{}
		if authz != "" {
			h["Authorization"] = []string{authz}
		}
		res, err := a.Authenticate(context.Background(), &jwt.Request{Header: h, RawQuery: query}, &istioRequirement)
		if err != nil {
			return
		}
		for _, v := range res.Verified {
			if v.Issuer != iss.Name || v.Subject != "fuzz" {
				t.Fatalf("accepted a token the issuer did not sign: %+v", v)
			}
		}
	})
}
