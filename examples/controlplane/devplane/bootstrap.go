package devplane

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// NodeCluster is the node cluster BootstrapJSON writes.
const NodeCluster = "weft-dev"

type bootstrapJSON struct {
	XDSServers []bootstrapServer `json:"xds_servers"`
	Node       bootstrapNode     `json:"node"`
}

type bootstrapServer struct {
	ServerURI      string              `json:"server_uri"`
	ChannelCreds   []map[string]string `json:"channel_creds"`
	ServerFeatures []string            `json:"server_features"`
}

type bootstrapNode struct {
	ID       string            `json:"id"`
	Cluster  string            `json:"cluster"`
	Locality map[string]string `json:"locality"`
}

// BootstrapJSON returns a gRPC xDS bootstrap (gRFC A27) naming the server
// at serverAddr (host:port) with insecure channel credentials, for node
// nodeID in cluster NodeCluster and the locality DefaultRegion/DefaultZone.
// The server gives every node the same config, so nodeID only labels the
// client in the server's logs.
//
// Point a process at it with GRPC_XDS_BOOTSTRAP (a file, see
// WriteBootstrap) or GRPC_XDS_BOOTSTRAP_CONFIG (the JSON itself).
func BootstrapJSON(serverAddr, nodeID string) []byte {
	b := bootstrapJSON{
		XDSServers: []bootstrapServer{{
			ServerURI:      serverAddr,
			ChannelCreds:   []map[string]string{{"type": "insecure"}},
			ServerFeatures: []string{"xds_v3"},
		}},
		Node: bootstrapNode{
			ID:       nodeID,
			Cluster:  NodeCluster,
			Locality: map[string]string{"region": DefaultRegion, "zone": DefaultZone},
		},
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		panic("devplane: " + err.Error()) // plain strings always marshal
	}
	return append(out, '\n')
}

// WriteBootstrap writes BootstrapJSON(serverAddr, nodeID) to path. It
// writes a temporary file and renames it, so a client starting meanwhile
// reads the old file or the new one, never half of one.
func WriteBootstrap(path, serverAddr, nodeID string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".bootstrap-*.json")
	if err != nil {
		return fmt.Errorf("devplane: write bootstrap: %w", err)
	}
	_, werr := f.Write(BootstrapJSON(serverAddr, nodeID))
	cerr := f.Close()
	if werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(f.Name(), 0o644)
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return fmt.Errorf("devplane: write bootstrap: %w", werr)
	}
	return nil
}
