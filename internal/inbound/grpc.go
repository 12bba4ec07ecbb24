package inbound

import (
	"net/http"
	"strings"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/xds"
)

// GRPCRequest returns the matching inputs of a gRPC call, as grpc-go's xDS
// server sees them: method POST, the full method path ("/pkg.Service/
// Method") as :path, exactly as grpc-go dispatches it (no normalization:
// grpc-go only reaches a handler, and so the server's interceptors, for a
// path naming a registered method), and the metadata as headers. Binary
// ("-bin") metadata is left out: its values are not text a string matcher
// can judge. The authority is md's ":authority".
func GRPCRequest(fullMethod string, md metadata.MD, isTLS bool) (req xds.Request, authority string) {
	h := make(http.Header, len(md))
	for k, vs := range md {
		switch {
		case k == ":authority":
			if len(vs) > 0 {
				authority = vs[0]
			}
			continue
		case strings.HasPrefix(k, ":"), strings.HasSuffix(k, "-bin"):
			continue
		}
		h[http.CanonicalHeaderKey(k)] = vs
	}
	scheme := "http"
	if isTLS {
		scheme = "https"
	}
	return xds.Request{Method: http.MethodPost, Path: fullMethod, Header: h, Scheme: scheme}, authority
}
