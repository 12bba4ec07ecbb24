package mesh_test

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/mesh"
)

// A bootstrap that is valid JSON but unusable must fail New with an error
// naming the source and the field, never a panic from tearing down the
// half-built mesh, and leave no goroutine behind.
func TestNewRefusesUnusableBootstrap(t *testing.T) {
	tests := []struct {
		name      string
		bootstrap string
		wantField string
	}{
		{"no channel_creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1"}]}`, "xds_servers[0].channel_creds"},
		{"empty channel_creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[]}]}`, "xds_servers[0].channel_creds"},
		{"bogus channel_creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"bogus"}]}]}`, "xds_servers[0].channel_creds"},
		{"authority template", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
			"authorities":{"a.example":{"client_listener_resource_name_template":"xdstp://b.example/x/%s"}}}`, `authorities["a.example"].client_listener_resource_name_template`},
		{"authority server creds", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
			"authorities":{"a.example":{"xds_servers":[{"server_uri":"127.0.0.1:2","channel_creds":[{"type":"bogus"}]}]}}}`, `authorities["a.example"].xds_servers[0].channel_creds`},
		{"certificate provider", `{"xds_servers":[{"server_uri":"127.0.0.1:1","channel_creds":[{"type":"insecure"}]}],
			"certificate_providers":{"p":{}}}`, `certificate_providers["p"].plugin_name`},
	}
	for _, tt := range tests {
		for _, via := range []string{mesh.EnvBootstrapConfig, "WithBootstrap"} {
			t.Run(tt.name+"/"+via, func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				var opts []mesh.Option
				if via == "WithBootstrap" {
					opts = append(opts, mesh.WithBootstrap([]byte(tt.bootstrap)))
				} else {
					t.Setenv(via, tt.bootstrap)
				}
				var (
					m   *mesh.Mesh
					err error
				)
				func() {
					defer func() {
						if p := recover(); p != nil {
							t.Fatalf("mesh.New panicked: %v", p)
						}
					}()
					m, err = mesh.New(context.Background(), opts...)
				}()
				if err == nil {
					m.Close()
					t.Fatalf("mesh.New accepted the bootstrap %s", tt.bootstrap)
				}
				for _, want := range []string{via, tt.wantField} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error = %q, want it to name %q", err, want)
					}
				}
			})
		}
	}
}
