package security_test

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/security"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/ and run as ordinary
// tests; `go test -fuzz=FuzzPathNormalize ./security/` explores further.

var fuzzRequests = []security.Request{
	{Method: "GET", Path: "/info", SourceID: sleepID, Port: 8080, SourceIP: netip.MustParseAddr("10.0.0.1"), Host: "a.example.com"},
	{Method: "POST", Path: "//admin/../x", Headers: http.Header{"Version": {"v1"}}},
	{Method: "GET", Path: "/%2Fadmin", SourceID: spiffeid.RequireFromString("spiffe://td/no-namespace")},
	{},
}

func FuzzParseAuthorizationPolicies(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := security.ParseAuthorizationPolicies(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "security: ") {
				t.Errorf("error %q lacks the security: prefix", err)
			}
			return
		}
		for i := range fuzzRequests {
			r := fuzzRequests[i]
			d1, d2 := p.Evaluate(&r), p.Evaluate(&r)
			if d1 != d2 {
				t.Errorf("Evaluate is not deterministic: %+v then %+v", d1, d2)
			}
			if d1.Allow && d1.Reason == "" {
				t.Errorf("decision %+v has no reason", d1)
			}
		}
	})
}

func FuzzPathNormalize(f *testing.F) {
	f.Fuzz(func(t *testing.T, p string) {
		got, err := security.NormalizePath(p)
		if err != nil {
			if got != "" {
				t.Errorf("NormalizePath(%q) = %q with error %v, want empty", p, got, err)
			}
			return
		}
		switch {
		case !strings.HasPrefix(got, "/"):
			t.Errorf("NormalizePath(%q) = %q, does not start with /", p, got)
		case strings.Contains(got, "//"):
			t.Errorf("NormalizePath(%q) = %q, has //", p, got)
		case strings.ContainsAny(got, "\\\x00?#") && !strings.ContainsAny(p, "%"):
			t.Errorf("NormalizePath(%q) = %q, has a backslash, NUL, ? or #", p, got)
		case strings.Contains(got, "\\") || strings.Contains(got, "\x00"):
			t.Errorf("NormalizePath(%q) = %q, has a backslash or NUL", p, got)
		}
		for _, seg := range strings.Split(got, "/") {
			if seg == "." || seg == ".." {
				t.Errorf("NormalizePath(%q) = %q, has a dot segment", p, got)
			}
		}
		// The output is a decoded path, not a request target: a decoded
		// "%", "?" or "#" would mean something else if fed back in.
		if !strings.ContainsAny(got, "%?#") {
			again, err := security.NormalizePath(got)
			if err != nil || again != got {
				t.Errorf("NormalizePath(%q) = %q, %v; want it unchanged (not idempotent)", got, again, err)
			}
		}
	})
}
