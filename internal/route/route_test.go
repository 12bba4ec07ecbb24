package route_test

import (
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// istiod's default retry_on mixes HTTP and gRPC names; each protocol keeps
// its own instead of dropping the route's retries.
func TestRetryConditionsPerProtocol(t *testing.T) {
	r := &xds.Route{Action: xds.RouteAction{RetryPolicy: &xds.RetryPolicy{
		RetryOn:    []string{"connect-failure", "refused-stream", "unavailable", "cancelled", "retriable-status-codes", "reset-before-request"},
		NumRetries: 2, PerTryTimeout: 150 * time.Millisecond}}}
	p := route.New(r, 0)
	want := resilience.RetryConnectFailure | resilience.RetryRefusedStream | resilience.RetryRetriableStatusCodes
	if p.HTTP.RetryOn != want || p.HTTP.NumRetries != 2 {
		t.Errorf("HTTP: retry on %v, %d retries; want %v, 2", p.HTTP.RetryOn, p.HTTP.NumRetries, want)
	}
	if got := p.GRPC.GRPCCodes; !slices.Equal(got, []codes.Code{codes.Unavailable, codes.Canceled}) || p.GRPC.NumRetries != 2 ||
		p.GRPC.PerTryTimeout != 150*time.Millisecond {
		t.Errorf("gRPC: codes %v, %d retries, per try %v; want [Unavailable Canceled], 2, 150ms", got, p.GRPC.NumRetries, p.GRPC.PerTryTimeout)
	}

	grpcOnly := route.New(&xds.Route{Action: xds.RouteAction{RetryPolicy: &xds.RetryPolicy{
		RetryOn: []string{"unavailable"}, PerTryTimeout: time.Second}}}, 0)
	if grpcOnly.HTTP.NumRetries >= 0 {
		t.Errorf("a gRPC-only retry_on gave HTTP %d retries, want none", grpcOnly.HTTP.NumRetries)
	}
	if grpcOnly.GRPC.NumRetries != 1 || grpcOnly.GRPC.PerTryTimeout != time.Second {
		t.Errorf("gRPC-only retry_on: %d retries, per try %v; want Envoy's default 1 and 1s", grpcOnly.GRPC.NumRetries, grpcOnly.GRPC.PerTryTimeout)
	}
}

// A route that sets no timeout gets Envoy's default on HTTP and none on
// gRPC, as in grpc-go; the listener's max_stream_duration applies to both
// unless the route sets its own.
func TestTimeouts(t *testing.T) {
	for _, tt := range []struct {
		name             string
		action           xds.RouteAction
		listener         time.Duration
		wantHTTP, wantGR time.Duration
	}{
		{"silent", xds.RouteAction{}, 0, 0, -1},
		{"listener default", xds.RouteAction{}, 2 * time.Second, 2 * time.Second, 2 * time.Second},
		{"route", xds.RouteAction{HasTimeout: true, Timeout: 300 * time.Millisecond}, 2 * time.Second, 300 * time.Millisecond, 300 * time.Millisecond},
		// A zero disables only its own bound: the listener's still holds,
		// as Envoy applies max_stream_duration beside the route timeout.
		{"route 0 under a listener bound", xds.RouteAction{HasTimeout: true}, 2 * time.Second, 2 * time.Second, 2 * time.Second},
		{"route 0 disables", xds.RouteAction{HasTimeout: true}, 0, -1, -1},
		{"route max_stream_duration beats the listener's", xds.RouteAction{HasTimeout: true, Timeout: 5 * time.Second, HasMaxStreamDuration: true}, 2 * time.Second, 5 * time.Second, 5 * time.Second},
	} {
		p := route.New(&xds.Route{Action: tt.action}, tt.listener)
		if p.HTTP.Timeout != tt.wantHTTP || p.GRPC.Timeout != tt.wantGR {
			t.Errorf("%s: HTTP %v, gRPC %v; want %v, %v", tt.name, p.HTTP.Timeout, p.GRPC.Timeout, tt.wantHTTP, tt.wantGR)
		}
	}
}

// A call's metadata are its headers for matching and hashing, without
// binary ones; the method is the path.
func TestGRPCRequestAndHash(t *testing.T) {
	md := metadata.Pairs("x-user", "alice", "trace-bin", "\x00\x01")
	req, _ := xds.RequestFromGRPC("/pkg.Svc/Method", md, false)
	if req.Path != "/pkg.Svc/Method" || req.Header.Get("X-User") != "alice" || req.Header.Get("Trace-Bin") != "" ||
		req.Header.Get("Content-Type") != "application/grpc" {
		t.Errorf("RequestFromGRPC = %+v", req)
	}
	byUser := []xds.HashPolicy{{Kind: xds.HashHeader, Name: "x-user"}}
	client := route.Client{ID: 7}
	g, ok := route.GRPCHash(req.Header, byUser, client)
	h, ok2 := route.HTTPHash(&http.Request{Header: http.Header{"X-User": {"alice"}}}, byUser, client)
	if !ok || !ok2 || g != h {
		t.Errorf("gRPC hash %x (%v), HTTP hash %x (%v): the same header must hash alike", g, ok, h, ok2)
	}
}

// TestClientHash: the hash policies on the client rather than the
// request, on both protocols. Envoy: filter_state "Hash on the value of
// the filter state object at the given key"; grpc-go hashes key
// io.grpc.channel_id, a random number per channel, and ignores other
// keys (translation drops them). connection_properties "Hash on source IP
// address": for a client that sends its own requests, the process's IP,
// the same on every request (Client.SourceIP).
func TestClientHash(t *testing.T) {
	a, b := route.NewClient("10.1.2.3"), route.NewClient("10.1.2.3")
	if a.ID == b.ID {
		t.Fatalf("two clients drew the same id %x", a.ID)
	}
	channel := []xds.HashPolicy{{Kind: xds.HashChannelID}}
	source := []xds.HashPolicy{{Kind: xds.HashSourceIP}}
	absentThenSource := []xds.HashPolicy{{Kind: xds.HashHeader, Name: "absent"}, {Kind: xds.HashSourceIP}}
	httpReq := &http.Request{Header: http.Header{}}
	for _, tt := range []struct {
		name     string
		policies []xds.HashPolicy
		c        route.Client
		want     uint64
		wantOK   bool
	}{
		{"channel id", channel, a, a.ID, true},
		{"channel id of another client", channel, b, b.ID, true},
		{"source IP", source, a, xxhash.Sum64String("10.1.2.3"), true},
		{"source IP is the same for every client", source, b, xxhash.Sum64String("10.1.2.3"), true},
		{"absent header, then source IP", absentThenSource, a, xxhash.Sum64String("10.1.2.3"), true},
		{"no source IP known", source, route.NewClient(""), 0, false},
		{"absent header only", []xds.HashPolicy{{Kind: xds.HashHeader, Name: "absent"}}, a, 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for proto, hash := range map[string]func() (uint64, bool){
				"gRPC": func() (uint64, bool) { return route.GRPCHash(http.Header{}, tt.policies, tt.c) },
				"HTTP": func() (uint64, bool) { return route.HTTPHash(httpReq, tt.policies, tt.c) },
			} {
				if got, ok := hash(); ok != tt.wantOK || got != tt.want {
					t.Errorf("%s: hash = %x, %v; want %x, %v", proto, got, ok, tt.want, tt.wantOK)
				}
			}
		})
	}
}

// Rewrites as Envoy applies them to the path as sent (escaped); each case
// is one where the HTTP path used to send something else than Envoy.
func TestRewriteAsEnvoy(t *testing.T) {
	for _, tt := range []struct {
		name   string
		match  xds.RouteMatch
		action xds.RouteAction
		target string
		want   string // the escaped path and query sent
	}{
		{"exact match, prefix_rewrite replaces the whole path",
			xds.RouteMatch{Kind: xds.PathExact, Path: "/exact", CaseSensitive: true}, xds.RouteAction{PrefixRewrite: "/replaced"},
			"/exact?q=1", "/replaced?q=1"},
		{"ignoreUriCase prefix is trimmed in any case",
			xds.RouteMatch{Kind: xds.PathPrefix, Path: "/CaseOld", CaseSensitive: false}, xds.RouteAction{PrefixRewrite: "/new"},
			"/caseold/items", "/new/items"},
		{"a case-sensitive prefix is trimmed as written",
			xds.RouteMatch{Kind: xds.PathPrefix, Path: "/old", CaseSensitive: true}, xds.RouteAction{PrefixRewrite: "/new"},
			"/old/items?x=%2F", "/new/items?x=%2F"},
		{"an encoded slash stays encoded",
			xds.RouteMatch{Kind: xds.PathPrefix, Path: "/old", CaseSensitive: true}, xds.RouteAction{PrefixRewrite: "/new"},
			"/old/a%2Fb", "/new/a%2Fb"},
		{"regex rewrite with groups",
			xds.RouteMatch{Kind: xds.PathPrefix, Path: "/", CaseSensitive: true},
			xds.RouteAction{RegexRewrite: &xds.RegexRewrite{Pattern: regexp.MustCompile(`^/regex/(v[0-9]+)/(.*)$`), Substitution: "/${2}/${1}"}},
			"/regex/v1/items", "/items/v1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse("http://orders:8080" + tt.target)
			if err != nil {
				t.Fatal(err)
			}
			out := &http.Request{URL: u, Header: http.Header{}}
			route.New(&xds.Route{Match: tt.match, Action: tt.action}, 0).Rewrite(out, "")
			got := out.URL.EscapedPath()
			if out.URL.RawQuery != "" {
				got += "?" + out.URL.RawQuery
			}
			if got != tt.want {
				t.Errorf("%s rewritten to %s, want %s (Envoy's)", tt.target, got, tt.want)
			}
		})
	}
}

// TestMirrorHost: Envoy's shadow writer appends "-shadow" to the host,
// before its port ("Switch authority to add a shadow postfix"), unless
// disable_shadow_host_suffix_append is set or host_rewrite_literal
// replaces the host.
func TestMirrorHost(t *testing.T) {
	for _, tt := range []struct {
		m    xds.MirrorPolicy
		host string
		want string
	}{
		{xds.MirrorPolicy{}, "orders", "orders-shadow"},
		{xds.MirrorPolicy{}, "orders:8080", "orders-shadow:8080"},
		{xds.MirrorPolicy{}, "[::1]:8080", "[::1]-shadow:8080"},
		{xds.MirrorPolicy{}, "[::1]", "[::1]-shadow"},
		{xds.MirrorPolicy{KeepHost: true}, "orders:8080", "orders:8080"},
		{xds.MirrorPolicy{KeepHost: true, HostRewrite: "shadow.example"}, "orders:8080", "shadow.example"},
	} {
		if got := route.MirrorHost(&tt.m, tt.host); got != tt.want {
			t.Errorf("MirrorHost(%+v, %q) = %q; want %q", tt.m, tt.host, got, tt.want)
		}
	}
}
