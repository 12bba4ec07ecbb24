package xds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/resolver"
)

// Channel credential types the bootstrap may name. Only these are
// understood; a server whose channel_creds names none of them is an error,
// as in grpc-go.
const (
	CredsInsecure      = "insecure"
	CredsTLS           = "tls"
	CredsGoogleDefault = "google_default"
)

// Server features the bootstrap may list (gRFC A27, A53).
const (
	FeatureXDSV3                  = "xds_v3"
	FeatureIgnoreResourceDeletion = "ignore_resource_deletion"
)

// Bootstrap is a parsed gRPC xDS bootstrap file (gRFC A27, A47, A71). It is
// a value: nothing mutates a Bootstrap after ParseBootstrap returns it, so it
// may be shared between goroutines.
type Bootstrap struct {
	// Servers are the management servers in fallback order (gRFC A71): the
	// first is the primary.
	Servers []ServerConfig
	Node    Node
	// CertificateProviders maps an instance name to its plugin and raw
	// config; the security package interprets the config.
	CertificateProviders map[string]CertificateProvider
	// ClientDefaultListenerResourceNameTemplate turns a target into a
	// Listener name; "%s" when the bootstrap does not set it.
	ClientDefaultListenerResourceNameTemplate string
	ServerListenerResourceNameTemplate        string
	// Authorities serve xdstp:// resource names (gRFC A47), by authority.
	Authorities map[string]Authority
}

// ServerConfig is one management server. It is a value.
type ServerConfig struct {
	URI string
	// CredsType is the first channel_creds type the client supports.
	CredsType string
	// CredsConfig is that entry's raw "config" object, or nil.
	CredsConfig json.RawMessage
	// Features is server_features as listed.
	Features []string
}

// IgnoreResourceDeletion reports whether the server listed
// ignore_resource_deletion: a Listener or Cluster missing from a response is
// then kept instead of reported as deleted (gRFC A53).
func (s ServerConfig) IgnoreResourceDeletion() bool {
	return hasFeature(s.Features, FeatureIgnoreResourceDeletion)
}

func hasFeature(fs []string, f string) bool {
	for _, x := range fs {
		if x == f {
			return true
		}
	}
	return false
}

// Node identifies this client to the management server. It is a value;
// Metadata is shared and must not be modified.
type Node struct {
	ID       string
	Cluster  string
	Locality resolver.Locality
	// Metadata is the node metadata as a protobuf Struct; nil when unset.
	Metadata *structpb.Struct
}

// Proto returns the node as sent in the first DiscoveryRequest of a stream,
// with the client features grpc-go also advertises.
func (n Node) Proto() *corev3.Node {
	p := &corev3.Node{
		Id:                   n.ID,
		Cluster:              n.Cluster,
		Metadata:             n.Metadata,
		UserAgentName:        "weft",
		ClientFeatures:       []string{"envoy.lb.does_not_support_overprovisioning", "xds.config.resource-in-sotw"},
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: "dev"},
	}
	if n.Locality != (resolver.Locality{}) {
		p.Locality = &corev3.Locality{Region: n.Locality.Region, Zone: n.Locality.Zone, SubZone: n.Locality.SubZone}
	}
	return p
}

// CertificateProvider is one entry of certificate_providers. It is a value.
type CertificateProvider struct {
	PluginName string
	Config     json.RawMessage
}

// Authority is one entry of authorities (gRFC A47). It is a value.
type Authority struct {
	ClientListenerResourceNameTemplate string
	Servers                            []ServerConfig
}

// The JSON shapes of the bootstrap file. Unknown fields are ignored, as
// grpc-go ignores them, so newer bootstraps keep working.
type jsonBootstrap struct {
	XDSServers                                []jsonServer                `json:"xds_servers"`
	Node                                      *jsonNode                   `json:"node"`
	CertificateProviders                      map[string]jsonCertProvider `json:"certificate_providers"`
	ClientDefaultListenerResourceNameTemplate *string                     `json:"client_default_listener_resource_name_template"`
	ServerListenerResourceNameTemplate        string                      `json:"server_listener_resource_name_template"`
	Authorities                               map[string]jsonAuthority    `json:"authorities"`
}

type jsonServer struct {
	ServerURI      string      `json:"server_uri"`
	ChannelCreds   []jsonCreds `json:"channel_creds"`
	ServerFeatures []string    `json:"server_features"`
}

type jsonCreds struct {
	Type   string          `json:"type"`
	Config json.RawMessage `json:"config"`
}

type jsonNode struct {
	ID       string `json:"id"`
	Cluster  string `json:"cluster"`
	Locality *struct {
		Region  string `json:"region"`
		Zone    string `json:"zone"`
		SubZone string `json:"sub_zone"`
	} `json:"locality"`
	Metadata map[string]any `json:"metadata"`
}

type jsonCertProvider struct {
	PluginName string          `json:"plugin_name"`
	Config     json.RawMessage `json:"config"`
}

type jsonAuthority struct {
	ClientListenerResourceNameTemplate string       `json:"client_listener_resource_name_template"`
	XDSServers                         []jsonServer `json:"xds_servers"`
}

// ParseBootstrap parses the JSON contents of a gRPC xDS bootstrap file. The
// error names the offending field, for example
// "xds: bootstrap: xds_servers[0].channel_creds: no supported type in [tls2]".
func ParseBootstrap(data []byte) (*Bootstrap, error) {
	var jb jsonBootstrap
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&jb); err != nil {
		return nil, fmt.Errorf("xds: bootstrap: %w", err)
	}
	if dec.More() {
		return nil, errors.New("xds: bootstrap: trailing data after the JSON object")
	}
	b := &Bootstrap{
		ClientDefaultListenerResourceNameTemplate: "%s",
		ServerListenerResourceNameTemplate:        jb.ServerListenerResourceNameTemplate,
	}
	if len(jb.XDSServers) == 0 {
		return nil, errors.New("xds: bootstrap: xds_servers: at least one server is required")
	}
	servers, err := parseServers("xds_servers", jb.XDSServers)
	if err != nil {
		return nil, err
	}
	b.Servers = servers
	if jb.Node != nil {
		b.Node.ID = jb.Node.ID
		b.Node.Cluster = jb.Node.Cluster
		if l := jb.Node.Locality; l != nil {
			b.Node.Locality.Region, b.Node.Locality.Zone, b.Node.Locality.SubZone = l.Region, l.Zone, l.SubZone
		}
		if jb.Node.Metadata != nil {
			md, err := structpb.NewStruct(jb.Node.Metadata)
			if err != nil {
				return nil, fmt.Errorf("xds: bootstrap: node.metadata: %w", err)
			}
			b.Node.Metadata = md
		}
	}
	if t := jb.ClientDefaultListenerResourceNameTemplate; t != nil && *t != "" {
		b.ClientDefaultListenerResourceNameTemplate = *t
	}
	if len(jb.CertificateProviders) > 0 {
		b.CertificateProviders = make(map[string]CertificateProvider, len(jb.CertificateProviders))
		for name, cp := range jb.CertificateProviders {
			if cp.PluginName == "" {
				return nil, fmt.Errorf("xds: bootstrap: certificate_providers[%q].plugin_name: required", name)
			}
			b.CertificateProviders[name] = CertificateProvider(cp)
		}
	}
	if len(jb.Authorities) > 0 {
		b.Authorities = make(map[string]Authority, len(jb.Authorities))
		for name, a := range jb.Authorities {
			field := fmt.Sprintf("authorities[%q]", name)
			if t := a.ClientListenerResourceNameTemplate; t != "" && !strings.HasPrefix(t, "xdstp://"+name+"/") {
				return nil, fmt.Errorf("xds: bootstrap: %s.client_listener_resource_name_template: %q does not start with %q", field, t, "xdstp://"+name+"/")
			}
			auth := Authority{ClientListenerResourceNameTemplate: a.ClientListenerResourceNameTemplate}
			if len(a.XDSServers) > 0 {
				s, err := parseServers(field+".xds_servers", a.XDSServers)
				if err != nil {
					return nil, err
				}
				auth.Servers = s
			}
			b.Authorities[name] = auth
		}
	}
	return b, nil
}

func parseServers(field string, js []jsonServer) ([]ServerConfig, error) {
	out := make([]ServerConfig, 0, len(js))
	for i, s := range js {
		f := fmt.Sprintf("%s[%d]", field, i)
		if s.ServerURI == "" {
			return nil, fmt.Errorf("xds: bootstrap: %s.server_uri: required", f)
		}
		if len(s.ChannelCreds) == 0 {
			return nil, fmt.Errorf("xds: bootstrap: %s.channel_creds: at least one entry is required", f)
		}
		sc := ServerConfig{URI: s.ServerURI, Features: s.ServerFeatures}
		types := make([]string, 0, len(s.ChannelCreds))
		for j, c := range s.ChannelCreds {
			types = append(types, c.Type)
			if sc.CredsType != "" {
				continue
			}
			switch c.Type {
			case CredsInsecure, CredsTLS, CredsGoogleDefault:
				sc.CredsType = c.Type
				if len(c.Config) > 0 && !bytes.Equal(c.Config, []byte("null")) {
					sc.CredsConfig = c.Config
				}
			}
			if c.Type == CredsTLS && sc.CredsConfig != nil {
				// gRFC A65: the file_watcher provider's fields; the
				// files themselves are read when the client starts.
				if _, err := parseTLSConfig(fmt.Sprintf("%s.channel_creds[%d].config", f, j), sc.CredsConfig); err != nil {
					return nil, fmt.Errorf("xds: bootstrap: %w", err)
				}
			}
		}
		if sc.CredsType == "" {
			return nil, fmt.Errorf("xds: bootstrap: %s.channel_creds: no supported type in %v", f, types)
		}
		out = append(out, sc)
	}
	return out, nil
}
