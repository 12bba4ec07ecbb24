package mesh_test

import (
	"context"
	"strings"
	"testing"

	"github.com/weftmesh/weft/mesh"
)

// TestControlPlaneTLSFileUnreadable: mesh.New refuses a bootstrap whose
// "tls" channel_creds name a file that cannot be read, naming the field
// and the file (gRFC A65's certificate files).
func TestControlPlaneTLSFileUnreadable(t *testing.T) {
	missing := t.TempDir() + "/client.pem"
	bs := `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"tls","config":{` +
		`"certificate_file":"` + missing + `","private_key_file":"` + missing + `"}}]}]}`
	m, err := mesh.New(context.Background(), mesh.WithBootstrap([]byte(bs)))
	if err == nil {
		m.Close()
		t.Fatal("New succeeded")
	}
	if want := `channel_creds (tls).config.certificate_file "` + missing + `"`; !strings.Contains(err.Error(), want) {
		t.Fatalf("New error = %v, want one containing %q", err, want)
	}
}
