package mesh

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"
)

// Each spelling withoutForwardedClientCertMD looks up is one
// isForwardedClientCert accepts, and the lookups find every separator
// and case mix of the header.
func TestForwardedClientCertSpellings(t *testing.T) {
	if len(forwardedClientCertSpellings) != 8 {
		t.Fatalf("%d spellings, want 8", len(forwardedClientCertSpellings))
	}
	for _, k := range forwardedClientCertSpellings {
		if !isForwardedClientCert(k) {
			t.Errorf("%q is not a spelling of %s", k, forwardedClientCert)
		}
	}
	for _, k := range []string{"x-forwarded-client-cert", "X_Forwarded-Client_CERT", "x-forwarded_client-cert", "X_FORWARDED_CLIENT_CERT"} {
		ctx := metadata.NewIncomingContext(context.Background(), metadata.MD{k: {"forged"}, "other": {"kept"}})
		md, _ := metadata.FromIncomingContext(withoutForwardedClientCertMD(ctx))
		if len(md) != 1 || md["other"][0] != "kept" {
			t.Errorf("with %q the metadata left are %v, want only other", k, md)
		}
	}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.MD{"other": {"kept"}})
	if withoutForwardedClientCertMD(ctx) != ctx {
		t.Error("metadata without the header were copied")
	}
}
