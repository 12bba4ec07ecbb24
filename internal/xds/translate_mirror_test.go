//lint:file-ignore SA1019 control planes still send the deprecated append field, and Envoy refuses it beside append_action

package xds

import (
	"errors"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// TestTranslateMirrorsAndHeaders holds request_mirror_policies and header
// changes to route.v3: the most specific non-empty list of mirror policies
// wins ("policies are not merged"), runtime_fraction is read per policy,
// and header mutations are listed in Envoy's evaluation order. Envoy
// refuses to add or remove pseudo-headers and Host ("':-prefixed' or host
// headers may not be modified"), and so does Weft, naming the field.
func TestTranslateMirrorsAndHeaders(t *testing.T) {
	mirror := func(cluster string, percent uint32) *routev3.RouteAction_RequestMirrorPolicy {
		p := &routev3.RouteAction_RequestMirrorPolicy{Cluster: cluster}
		if percent > 0 {
			p.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: percent}}
		}
		return p
	}
	hv := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	tests := []struct {
		name        string
		edit        func(rc *routev3.RouteConfiguration)
		wantMirrors []MirrorPolicy
		wantReq     []HeaderMutation
		wantField   string
		wantSkipped string // an unapplied field the report names
	}{
		{name: "route's mirrors win over the virtual host's",
			edit: func(rc *routev3.RouteConfiguration) {
				rc.VirtualHosts[0].RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{mirror("vh", 0)}
				rc.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{mirror("rc", 0)}
				rc.VirtualHosts[0].Routes[0].GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{mirror("a", 25), mirror("b", 0)}
			},
			wantMirrors: []MirrorPolicy{{Cluster: "a", FractionPerMillion: 250_000}, {Cluster: "b", FractionPerMillion: 1_000_000}}},
		{name: "virtual host's mirrors, then the route configuration's",
			edit: func(rc *routev3.RouteConfiguration) {
				rc.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{mirror("rc", 0)}
			},
			wantMirrors: []MirrorPolicy{{Cluster: "rc", FractionPerMillion: 1_000_000}}},
		{name: "host suffix disabled, host rewritten",
			edit: func(rc *routev3.RouteConfiguration) {
				a, b := mirror("a", 0), mirror("b", 0)
				a.DisableShadowHostSuffixAppend = true
				b.HostRewriteLiteral = "shadow.example"
				rc.VirtualHosts[0].Routes[0].GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{a, b}
			},
			wantMirrors: []MirrorPolicy{{Cluster: "a", FractionPerMillion: 1_000_000, KeepHost: true},
				{Cluster: "b", FractionPerMillion: 1_000_000, KeepHost: true, HostRewrite: "shadow.example"}}},
		{name: "trace_sampled is reported, not applied",
			edit: func(rc *routev3.RouteConfiguration) {
				p := mirror("a", 0)
				p.TraceSampled = wrapperspb.Bool(true)
				rc.VirtualHosts[0].Routes[0].GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{p}
			},
			wantMirrors: []MirrorPolicy{{Cluster: "a", FractionPerMillion: 1_000_000}},
			wantSkipped: "virtual_hosts.routes.route.request_mirror_policies.trace_sampled"},
		{name: "cluster_header is reported, not applied",
			edit: func(rc *routev3.RouteConfiguration) {
				rc.VirtualHosts[0].Routes[0].GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{ClusterHeader: "x-mirror"}}
			},
			wantSkipped: "virtual_hosts.routes.route.request_mirror_policies.cluster_header"},
		{name: "mirror without a cluster",
			edit: func(rc *routev3.RouteConfiguration) {
				rc.VirtualHosts[0].Routes[0].GetRoute().RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{}}
			},
			wantField: "virtual_hosts[0].routes[0].route.request_mirror_policies[0].cluster"},
		{name: "header levels, most specific first",
			edit: func(rc *routev3.RouteConfiguration) {
				rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-rc", "1")}
				rc.VirtualHosts[0].RequestHeadersToRemove = []string{"x-vh"}
				rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-route", "1")}
			},
			wantReq: []HeaderMutation{{Add: []HeaderValueOption{{Name: "x-route", Value: "1"}}}, {Remove: []string{"x-vh"}},
				{Add: []HeaderValueOption{{Name: "x-rc", Value: "1"}}}}},
		{name: "header levels, most specific last",
			edit: func(rc *routev3.RouteConfiguration) {
				rc.MostSpecificHeaderMutationsWins = true
				rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-rc", "1")}
				rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-route", "1")}
			},
			wantReq: []HeaderMutation{{Add: []HeaderValueOption{{Name: "x-rc", Value: "1"}}}, {Add: []HeaderValueOption{{Name: "x-route", Value: "1"}}}}},
		{name: "adding Host", edit: func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("Host", "x")}
		}, wantField: "virtual_hosts[0].routes[0].request_headers_to_add[0].header.key"},
		{name: "removing :authority at the virtual host", edit: func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].RequestHeadersToRemove = []string{":authority"}
		}, wantField: "virtual_hosts[0].request_headers_to_remove[0]"},
		{name: "adding a pseudo-header to responses", edit: func(rc *routev3.RouteConfiguration) {
			rc.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv(":status", "200")}
		}, wantField: "response_headers_to_add[0].header.key"},
		{name: "append beside append_action", edit: func(rc *routev3.RouteConfiguration) {
			o := hv("x", "1")
			o.Append, o.AppendAction = wrapperspb.Bool(true), corev3.HeaderValueOption_ADD_IF_ABSENT
			rc.VirtualHosts[0].Routes[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{o}
		}, wantField: "virtual_hosts[0].routes[0].request_headers_to_add[0].append"},
		{name: "weighted cluster header adding Host", edit: func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "c", Weight: wrapperspb.UInt32(1),
					RequestHeadersToAdd: []*corev3.HeaderValueOption{hv("host", "x")}}}}}
		}, wantField: "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].request_headers_to_add[0].header.key"},
		{name: "host_rewrite_header naming Host", edit: func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().HostRewriteSpecifier = &routev3.RouteAction_HostRewriteHeader{HostRewriteHeader: ":authority"}
		}, wantField: "virtual_hosts[0].routes[0].route.host_rewrite_header"},
		{name: "auto_host_rewrite is applied", edit: func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].GetRoute().HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := xdstest.RouteConfig("r", "*", "c")
			tt.edit(rc)
			out, err := TranslateRouteConfig(rc)
			if tt.wantField != "" {
				var re *ResourceError
				if !errors.As(err, &re) || re.Field != tt.wantField {
					t.Fatalf("error = %v; want a NACK naming %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a := out.VirtualHosts[0].Routes[0].Action
			if !reflect.DeepEqual(a.MirrorPolicies, tt.wantMirrors) {
				t.Errorf("MirrorPolicies = %+v; want %+v", a.MirrorPolicies, tt.wantMirrors)
			}
			if tt.wantReq != nil && !reflect.DeepEqual(a.RequestHeaders, tt.wantReq) {
				t.Errorf("RequestHeaders = %+v; want %+v", a.RequestHeaders, tt.wantReq)
			}
			u := out.UnappliedFields()
			if tt.wantSkipped != "" && (len(u) != 1 || u[0] != tt.wantSkipped) {
				t.Errorf("unapplied fields %v; want [%s]", u, tt.wantSkipped)
			}
			if tt.wantSkipped == "" && len(u) > 0 {
				t.Errorf("unapplied fields %v; want none", u)
			}
		})
	}
}
