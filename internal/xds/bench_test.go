package xds

import (
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// bigAssignment is a load assignment of n endpoints in 10 localities;
// port shifts every address so two assignments differ.
func bigAssignment(tb testing.TB, n, port int) *anypb.Any {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: "big"}
	for l := 0; l < 10; l++ {
		var addrs []string
		for i := l; i < n; i += 10 {
			addrs = append(addrs, fmt.Sprintf("10.%d.%d.%d:%d", i>>16&255, i>>8&255, i&255, port))
		}
		loc := xdstest.Endpoints("x", addrs...).Endpoints[0]
		loc.Locality = &corev3.Locality{Region: "r", Zone: fmt.Sprint("z", l)}
		loc.LoadBalancingWeight = wrapperspb.UInt32(uint32(l + 1))
		la.Endpoints = append(la.Endpoints, loc)
	}
	return mustAny(tb, la)
}

func BenchmarkDecodeEDS10k(b *testing.B) {
	a := bigAssignment(b, 10_000, 80)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Decode(EndpointsType, a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyEDS10k measures one EDS response of 10,000 endpoints
// through the client: hashing, decoding, validation, caching and queuing
// the watcher callback. Alternate responses differ so each one is applied.
func BenchmarkApplyEDS10k(b *testing.B) {
	dead := xdstest.NewServer(b)
	addr := dead.Addr
	dead.Stop()
	bs, err := ParseBootstrap(xdstest.BootstrapJSON(node, addr))
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(bs)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	updates := make(chan struct{}, 1)
	defer c.Watch(EndpointsType, "big", watcherFuncs{update: func(Resource) {
		select {
		case updates <- struct{}{}:
		default:
		}
	}})()
	resps := []*anypb.Any{bigAssignment(b, 10_000, 80), bigAssignment(b, 10_000, 81)}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: fmt.Sprint(i), TypeUrl: EndpointsTypeURL, Nonce: fmt.Sprint(i), Resources: resps[i%2 : i%2+1]}
		c.handleResponse(resp, 0)
		i++
	}
	b.StopTimer()
	<-updates
}

type watcherFuncs struct{ update func(Resource) }

func (w watcherFuncs) OnUpdate(r Resource) { w.update(r) }
func (watcherFuncs) OnError(error)         {}
func (watcherFuncs) OnDoesNotExist()       {}
