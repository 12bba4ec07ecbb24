package xds

import (
	"strings"
	"testing"
)

func TestParseBootstrap(t *testing.T) {
	full := `{
	  "xds_servers": [
	    {"server_uri": "cp:443", "channel_creds": [{"type": "unknown"}, {"type": "tls"}, {"type": "insecure"}],
	     "server_features": ["xds_v3", "ignore_resource_deletion"]},
	    {"server_uri": "backup:443", "channel_creds": [{"type": "google_default"}]}
	  ],
	  "node": {"id": "n1", "cluster": "c1", "locality": {"region": "r", "zone": "z", "sub_zone": "s"},
	           "metadata": {"GENERATOR": "grpc", "n": 1}},
	  "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {"certificate_file": "/c"}}},
	  "client_default_listener_resource_name_template": "xdstp://auth/envoy.config.listener.v3.Listener/%s",
	  "server_listener_resource_name_template": "grpc/server?xds.resource.listening_address=%s",
	  "authorities": {"auth": {"client_listener_resource_name_template": "xdstp://auth/l/%s",
	                           "xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "insecure"}]}]}},
	  "unknown_field": true
	}`
	b, err := ParseBootstrap([]byte(full))
	if err != nil {
		t.Fatalf("ParseBootstrap(full) error = %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"servers", len(b.Servers), 2},
		{"uri", b.Servers[0].URI, "cp:443"},
		{"creds picks first supported", b.Servers[0].CredsType, CredsTLS},
		{"fallback creds", b.Servers[1].CredsType, CredsGoogleDefault},
		{"ignore deletion", b.Servers[0].IgnoreResourceDeletion(), true},
		{"fallback ignore deletion", b.Servers[1].IgnoreResourceDeletion(), false},
		{"node id", b.Node.ID, "n1"},
		{"node cluster", b.Node.Cluster, "c1"},
		{"subzone", b.Node.Locality.SubZone, "s"},
		{"metadata", b.Node.Metadata.GetFields()["GENERATOR"].GetStringValue(), "grpc"},
		{"proto locality", b.Node.Proto().GetLocality().GetZone(), "z"},
		{"cert provider", b.CertificateProviders["default"].PluginName, "file_watcher"},
		{"client template", b.ClientDefaultListenerResourceNameTemplate, "xdstp://auth/envoy.config.listener.v3.Listener/%s"},
		{"server template", b.ServerListenerResourceNameTemplate, "grpc/server?xds.resource.listening_address=%s"},
		{"authority servers", b.Authorities["auth"].Servers[0].URI, "a:1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}

	min, err := ParseBootstrap([]byte(`{"xds_servers":[{"server_uri":"x:1","channel_creds":[{"type":"insecure"}]}]}`))
	if err != nil {
		t.Fatalf("ParseBootstrap(minimal) error = %v", err)
	}
	if got := min.ClientDefaultListenerResourceNameTemplate; got != "%s" {
		t.Errorf("default client template: got %q, want %%s", got)
	}
}

func TestParseBootstrapErrors(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"not json", `{`, "xds: bootstrap:"},
		{"trailing", `{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"insecure"}]}]} {}`, "trailing data"},
		{"no servers", `{}`, "xds: bootstrap: xds_servers: at least one server"},
		{"no uri", `{"xds_servers":[{"channel_creds":[{"type":"insecure"}]}]}`, "xds_servers[0].server_uri: required"},
		{"no creds", `{"xds_servers":[{"server_uri":"x"}]}`, "xds_servers[0].channel_creds: at least one entry"},
		{"unsupported creds", `{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"tls2"},{"type":"alts"}]}]}`,
			"xds: bootstrap: xds_servers[0].channel_creds: no supported type in [tls2 alts]"},
		{"second server", `{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"insecure"}]},{"server_uri":"y","channel_creds":[]}]}`,
			"xds_servers[1].channel_creds"},
		{"wrong type", `{"xds_servers":"x"}`, "xds: bootstrap:"},
		{"cert provider", `{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"insecure"}]}],"certificate_providers":{"p":{}}}`,
			`certificate_providers["p"].plugin_name: required`},
		{"authority template", `{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"insecure"}]}],"authorities":{"a":{"client_listener_resource_name_template":"xdstp://b/%s"}}}`,
			`authorities["a"].client_listener_resource_name_template`},
		{"authority server", `{"xds_servers":[{"server_uri":"x","channel_creds":[{"type":"insecure"}]}],"authorities":{"a":{"xds_servers":[{"server_uri":""}]}}}`,
			`authorities["a"].xds_servers[0].server_uri: required`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBootstrap([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseBootstrap() error = %v, want containing %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzParseBootstrap(f *testing.F) {
	f.Add([]byte(`{"xds_servers":[{"server_uri":"x:1","channel_creds":[{"type":"insecure"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBootstrap(data)
		if err != nil {
			if b != nil {
				t.Fatalf("ParseBootstrap returned both a bootstrap and error %v", err)
			}
			return
		}
		if len(b.Servers) == 0 || b.ClientDefaultListenerResourceNameTemplate == "" {
			t.Fatalf("accepted bootstrap without servers or template: %+v", b)
		}
		for _, s := range b.Servers {
			if s.URI == "" || s.CredsType == "" {
				t.Fatalf("accepted server without URI or creds: %+v", s)
			}
		}
		_ = b.Node.Proto()
	})
}
