package balancer_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

// TestEndpointHashKey: gRFC A76, "the ring hash LB policy will use the
// hash_key attribute of the endpoint, if present, as the endpoint hash
// key instead of its address". An endpoint that comes back at another
// address with its key keeps every request hash it had; with addresses
// as keys, the same move reshuffles.
func TestEndpointHashKey(t *testing.T) {
	ks := keys(20_000)
	withKeys := func(addrs ...string) []resolver.Endpoint {
		eps := make([]resolver.Endpoint, len(addrs))
		for i, a := range addrs {
			eps[i] = resolver.Endpoint{Addr: a, HashKey: fmt.Sprintf("pod-%d", i)}
		}
		return eps
	}
	for _, p := range hashPolicies {
		t.Run(p.name, func(t *testing.T) {
			c := newCluster(t, p.build(seeded(3)), "", withKeys("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
			before := assign(t, c, ks)
			// pod-1 moves to a new address.
			c.Update(withKeys("10.0.0.1:80", "10.0.0.9:80", "10.0.0.3:80"))
			after := assign(t, c, ks)
			for i := range ks {
				want := before[i]
				if want == "10.0.0.2:80" {
					want = "10.0.0.9:80"
				}
				if after[i] != want {
					t.Fatalf("hash %x went to %s, want %s: a key that keeps its hash_key keeps its requests", ks[i], after[i], want)
				}
			}
			// Without keys the ring follows addresses, so the move shuffles
			// requests; that the keys above mattered shows here.
			plain := newCluster(t, p.build(seeded(3)), "", endpoints(1, 1, 1))
			keyed := newCluster(t, p.build(seeded(3)), "", withKeys("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"))
			if slices.Equal(assign(t, plain, ks[:200]), assign(t, keyed, ks[:200])) {
				t.Error("hash keys placed the endpoints as their addresses do")
			}
		})
	}
}

// TestRequestHashHeader: gRFC A76, "requestHashHeader ... the header
// whose value will be hashed ... If the header is not present, a random
// hash is used". The named header of an HTTP request (PickInfo.Header) or
// of a gRPC call's outgoing metadata (PickInfo.Ctx) places it; a request
// with a hash from a hash policy keeps that hash; values sent several
// times are joined with commas, as in grpc-go.
func TestRequestHashHeader(t *testing.T) {
	eps := equal(5)
	ctxWith := func(kv ...string) context.Context {
		return metadata.NewOutgoingContext(context.Background(), metadata.Pairs(kv...))
	}
	for _, p := range hashPolicies {
		t.Run(p.name, func(t *testing.T) {
			c := newCluster(t, p.build(seeded(5)), `{"requestHashHeader":"X-User"}`, eps)
			pick := func(info balancer.PickInfo) string {
				t.Helper()
				r, err := c.Pick(info)
				if err != nil {
					t.Fatal(err)
				}
				r.Finish(balancer.DoneInfo{})
				return r.Endpoint.Addr
			}
			spread := map[string]bool{}
			for u := range 40 {
				user := fmt.Sprintf("user-%d", u)
				rows := []struct {
					name string
					info balancer.PickInfo
				}{
					{"HTTP header", balancer.PickInfo{Ctx: context.Background(), Header: http.Header{"X-User": {user}}}},
					{"gRPC metadata", balancer.PickInfo{Ctx: ctxWith("x-user", user)}},
				}
				var got []string
				for _, r := range rows {
					for range 3 {
						got = append(got, pick(r.info))
					}
				}
				spread[got[0]] = true
				if len(slices.Compact(got)) != 1 {
					t.Errorf("%s: picks not all to one endpoint on both protocols", user)
				}
			}
			if len(spread) < 3 {
				t.Errorf("40 users on %d endpoints, want them spread", len(spread))
			}
			// Joined values hash as one.
			joined := pick(balancer.PickInfo{Header: http.Header{"X-User": {"a,b"}}})
			if got := pick(balancer.PickInfo{Ctx: ctxWith("x-user", "a", "x-user", "b")}); got != joined {
				t.Errorf("values a and b went to %s, want %s, where \"a,b\" goes", got, joined)
			}
			// A hash from a hash policy wins over the header.
			byHash := pick(balancer.PickInfo{Hash: 42, HasHash: true})
			if got := pick(balancer.PickInfo{Hash: 42, HasHash: true, Header: http.Header{"X-User": {"user-1"}}}); got != byHash {
				t.Errorf("with a hash, picked %s, want %s", got, byHash)
			}
			// Without the header, random hashes spread the requests.
			none := map[string]bool{}
			for range 50 {
				none[pick(balancer.PickInfo{Header: http.Header{}})] = true
			}
			if len(none) < 3 {
				t.Errorf("requests without the header reached %d endpoints, want random spread", len(none))
			}
		})
	}
	for _, bad := range []string{`{"requestHashHeader":"x-trace-bin"}`, `{"requestHashHeader":"bad header"}`, `{"requestHashHeader":":path"}`} {
		for _, name := range []string{balancer.RingHash, balancer.Maglev} {
			if _, err := balancer.Get(name).(balancer.ConfigParser).ParseConfig([]byte(bad)); err == nil {
				t.Errorf("%s: ParseConfig(%s) accepted it", name, bad)
			}
		}
	}
}
