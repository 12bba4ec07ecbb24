package security_test

import (
	"net/http"
	"net/netip"
	"reflect"
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

// FuzzAuthorizationEvaluate parses a policy and evaluates it against a
// fuzzed request. Beyond not panicking, a decision must be deterministic,
// must leave the request as it was, must not depend on the spelling of an
// equivalent path (the policy sees the normalized path, so "//a/../b" and
// "/b" are one request) nor on the case of the host.
func FuzzAuthorizationEvaluate(f *testing.F) {
	f.Fuzz(func(t *testing.T, policy []byte, method, path, host, hname, hvalue, source string, ip []byte, port uint16) {
		p, err := security.ParseAuthorizationPolicies(policy)
		if err != nil {
			return
		}
		r := security.Request{Method: method, Path: path, Host: host, Port: int(port)}
		if hname != "" {
			r.Headers = http.Header{http.CanonicalHeaderKey(hname): {hvalue}}
		}
		if id, err := spiffeid.FromString(source); err == nil {
			r.SourceID = id
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			r.SourceIP = a
		}
		before := r
		before.Headers = r.Headers.Clone()

		d := p.Evaluate(&r)
		if again := p.Evaluate(&r); again != d {
			t.Fatalf("Evaluate is not deterministic: %+v then %+v", d, again)
		}
		if r.Method != before.Method || r.Path != before.Path || r.Host != before.Host || r.Port != before.Port ||
			r.SourceID != before.SourceID || r.SourceIP != before.SourceIP || !reflect.DeepEqual(r.Headers, before.Headers) {
			t.Fatalf("Evaluate modified the request: %+v, was %+v", r, before)
		}
		if d.Reason == "" {
			t.Errorf("decision %+v has no reason", d)
		}
		if norm, err := security.NormalizePath(path); err == nil && !strings.ContainsAny(norm, "%?#") {
			rn := r
			rn.Path = norm
			if dn := p.Evaluate(&rn); dn.Allow != d.Allow {
				t.Errorf("path %q decided %+v but its normal form %q decided %+v", path, d, norm, dn)
			}
		}
		ru := r
		ru.Host = asciiUpper(host)
		if du := p.Evaluate(&ru); du.Allow != d.Allow {
			t.Errorf("host %q decided %+v but %q decided %+v", host, d, ru.Host, du)
		}
	})
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}
