package route_test

import (
	"net/http"
	"testing"

	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
)

// BenchmarkHash measures a request's hash under the hash policies istiod
// sends (a header, named in canonical form as translation names it; the
// source IP) and grpc-go's channel id, on both protocols.
func BenchmarkHash(b *testing.B) {
	c := route.NewClient("10.1.2.3")
	hdr := http.Header{"X-User": {"alice"}}
	req := &http.Request{Header: hdr}
	for _, p := range []struct {
		name     string
		policies []xds.HashPolicy
	}{
		{"header", []xds.HashPolicy{{Kind: xds.HashHeader, Name: "X-User"}}},
		{"source_ip", []xds.HashPolicy{{Kind: xds.HashSourceIP}}},
		{"channel_id", []xds.HashPolicy{{Kind: xds.HashChannelID}}},
	} {
		b.Run("http/"+p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := route.HTTPHash(req, p.policies, c); !ok {
					b.Fatal("no hash")
				}
			}
		})
		b.Run("grpc/"+p.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := route.GRPCHash(hdr, p.policies, c); !ok {
					b.Fatal("no hash")
				}
			}
		})
	}
}
