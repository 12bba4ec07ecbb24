package mesh

import (
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/weftmesh/weft/internal/tap"
	"github.com/weftmesh/weft/resolver"
)

// WithNetResolver makes the mesh's DNS discovery ask r instead of the
// system's resolver, so tests can run their own DNS server on loopback.
func WithNetResolver(r *net.Resolver) Option {
	return optionFunc(func(c *config) error {
		c.netResolver = r
		return nil
	})
}

// WithDNSRefresh sets how often DNS names are looked up again, below
// WEFT_DNS_REFRESH's floor of 1s, so tests can watch DNS changes in
// milliseconds.
func WithDNSRefresh(d time.Duration) Option {
	return optionFunc(func(c *config) error {
		c.dnsRefresh = d
		return nil
	})
}

// SetStaticEndpoints replaces the endpoints static discovery lists for
// service, written as in WEFT_ENDPOINTS (host:port[@region/zone]), so
// tests can add and remove endpoints of a running mesh.
func (m *Mesh) SetStaticEndpoints(service string, specs ...string) error {
	parsed, err := resolver.ParseEndpoints(service + "=" + strings.Join(specs, ","))
	if err != nil {
		return err
	}
	m.static.Update(service, parsed[service])
	return nil
}

// TapBus is the mesh's tap, for tests that subscribe without HTTP.
func TapBus(m *Mesh) *tap.Bus { return m.tap }

// AdminAddr is the admin listener's bound address ("" when off).
func AdminAddr(m *Mesh) string { return m.adminBound }

// CallerCopies is how many per-cluster copies of a caller's base rt, a
// transport from Transport(base), holds.
func CallerCopies(rt http.RoundTripper) int {
	t := rt.(*transport)
	t.clusterMu.Lock()
	defer t.clusterMu.Unlock()
	return len(t.clusterRTs)
}

// ClusterSubscribed reports whether the mesh follows the xDS cluster name.
func (m *Mesh) ClusterSubscribed(name string) bool {
	m.xds.mu.Lock()
	defer m.xds.mu.Unlock()
	return m.xds.clusters[name] != nil
}
