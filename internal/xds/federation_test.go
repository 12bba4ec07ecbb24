package xds

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// gRFC A47: "the context parameters are sorted by key" in the canonical
// form of an xdstp:// name, so equal resources compare equal.
func TestParseXDSTP(t *testing.T) {
	tests := []struct {
		in, auth, canonical, wantErr string
	}{
		{in: "xdstp://a.example/envoy.config.listener.v3.Listener/svc", auth: "a.example", canonical: "xdstp://a.example/envoy.config.listener.v3.Listener/svc"},
		{in: "xdstp://a/envoy.config.cluster.v3.Cluster/c?z=1&a=2&m=3", auth: "a", canonical: "xdstp://a/envoy.config.cluster.v3.Cluster/c?a=2&m=3&z=1"},
		{in: "xdstp:///envoy.config.listener.v3.Listener/svc", auth: "", canonical: "xdstp:///envoy.config.listener.v3.Listener/svc"},
		{in: "xdstp://a/envoy.config.listener.v3.Listener/%5B::1%5D:80", auth: "a", canonical: "xdstp://a/envoy.config.listener.v3.Listener/%5B::1%5D:80"},
		{in: "xdstp://a", wantErr: "no resource type and id"},
		{in: "xdstp:opaque", wantErr: "not xdstp://"},
		{in: "xdstp://a/x%zz", wantErr: "invalid URL escape"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			auth, canonical, err := parseXDSTP(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), tt.in) {
					t.Fatalf("parseXDSTP() error = %v, want one naming %q and containing %q", err, tt.in, tt.wantErr)
				}
				return
			}
			if err != nil || auth != tt.auth || canonical != tt.canonical {
				t.Errorf("parseXDSTP() = %q, %q, %v; want %q, %q", auth, canonical, err, tt.auth, tt.canonical)
			}
		})
	}
}

// gRFC A47: a target with an authority uses that authority's
// client_listener_resource_name_template, by default
// "xdstp://<authority>/envoy.config.listener.v3.Listener/%s"; one without
// uses client_default_listener_resource_name_template; in an xdstp://
// template the target is percent-encoded.
func TestListenerName(t *testing.T) {
	b, err := ParseBootstrap([]byte(`{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"insecure"}]}],
		"client_default_listener_resource_name_template":"xdstp://def/envoy.config.listener.v3.Listener/%s",
		"authorities":{"a":{},"b":{"client_listener_resource_name_template":"xdstp://b/l/%s?k=v"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	plain := &Bootstrap{}
	tests := []struct {
		b               *Bootstrap
		authority, host string
		want, wantErr   string
	}{
		{b: plain, host: "svc:80", want: "svc:80"},
		{b: b, host: "svc:80", want: "xdstp://def/envoy.config.listener.v3.Listener/svc:80"},
		{b: b, host: "[::1]:80", want: "xdstp://def/envoy.config.listener.v3.Listener/%5B::1%5D:80"},
		{b: b, authority: "a", host: "svc:80", want: "xdstp://a/envoy.config.listener.v3.Listener/svc:80"},
		{b: b, authority: "b", host: "ns/svc", want: "xdstp://b/l/ns/svc?k=v"},
		{b: b, authority: "nope", host: "svc", wantErr: `authority "nope" is not in the bootstrap's authorities`},
	}
	for _, tt := range tests {
		got, err := tt.b.ListenerName(tt.authority, tt.host)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ListenerName(%q, %q) error = %v, want %q", tt.authority, tt.host, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ListenerName(%q, %q) = %q, %v; want %q", tt.authority, tt.host, got, err, tt.want)
		}
	}
}

// federatedBootstrap is a bootstrap whose top-level server is def, with
// authority "own" served by own and authority "shared" by def.
func federatedBootstrap(t *testing.T, def, own *xdstest.Server) []byte {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(def.Bootstrap(node), &v); err != nil {
		t.Fatal(err)
	}
	var o map[string]any
	if err := json.Unmarshal(own.Bootstrap(node), &o); err != nil {
		t.Fatal(err)
	}
	v["authorities"] = map[string]any{"own": map[string]any{"xds_servers": o["xds_servers"]}, "shared": map[string]any{}}
	out, _ := json.Marshal(v)
	return out
}

// TestFederation: xdstp:// resources of an authority with servers of its
// own come over a stream to those servers; those of an authority without
// servers, and old-style names, over the top-level servers' stream: one
// stream per server. Names are matched in canonical form. Both protocols.
func TestFederation(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "state of the world", true: "delta"}[delta], func(t *testing.T) { testFederation(t, delta) })
	}
}

func testFederation(t *testing.T, delta bool) {
	def, own := xdstest.NewServer(t), xdstest.NewServer(t)
	ownCluster := "xdstp://own/envoy.config.cluster.v3.Cluster/c?a=1&b=2"
	sharedCluster := "xdstp://shared/envoy.config.cluster.v3.Cluster/s"
	def.SetSnapshot(t, node, "1", xdstest.Cluster("plain", ""), xdstest.Cluster(sharedCluster, ""))
	own.SetSnapshot(t, node, "1", xdstest.Cluster(ownCluster, ""))
	opts := []Option{fastBackoff()}
	if delta {
		opts = append(opts, WithDelta())
	}
	c := newTestClient(t, federatedBootstrap(t, def, own), opts...)

	tests := []struct {
		watch, want string
	}{
		{watch: "plain", want: "plain"},
		{watch: sharedCluster, want: sharedCluster},
		// The context parameters in another order name the same resource.
		{watch: "xdstp://own/envoy.config.cluster.v3.Cluster/c?b=2&a=1", want: ownCluster},
	}
	for _, tt := range tests {
		r := newRecorder()
		defer c.Watch(ClusterType, tt.watch, r)()
		if got := r.next(t, "update").res.ResourceName(); got != tt.want {
			t.Errorf("Watch(%q) delivered %q, want %q", tt.watch, got, tt.want)
		}
	}
	if opened, _ := def.Streams(); opened != 1 {
		t.Errorf("top-level server: %d streams opened, want 1", opened)
	}
	if opened, _ := own.Streams(); opened != 1 {
		t.Errorf("authority's server: %d streams opened, want 1", opened)
	}
	for _, r := range def.Requests() {
		for _, n := range r.GetResourceNames() {
			if strings.Contains(n, "//own/") {
				t.Errorf("top-level server was asked for %q", n)
			}
		}
	}
	for _, r := range def.DeltaRequests() {
		for _, n := range r.GetResourceNamesSubscribe() {
			if strings.Contains(n, "//own/") {
				t.Errorf("top-level server was asked for %q", n)
			}
		}
	}
	var names []string
	for _, s := range c.Dump() {
		names = append(names, s.Name)
	}
	if got, want := strings.Join(names, " "), "plain "+ownCluster+" "+sharedCluster; got != want {
		t.Errorf("Dump names %q, want %q", got, want)
	}

	r := newRecorder()
	defer c.Watch(ClusterType, "xdstp://elsewhere/envoy.config.cluster.v3.Cluster/x", r)()
	if err := r.next(t, "error").err; !strings.Contains(err.Error(), `authority "elsewhere" is not in the bootstrap's authorities`) {
		t.Errorf("unknown authority: error %v", err)
	}
}
