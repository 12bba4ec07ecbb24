package mesh

import (
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc"
	gresolver "google.golang.org/grpc/resolver"
)

// grpcScheme is the resolver scheme of Weft's discovery inside gRPC. It is
// registered per channel (grpc.WithResolvers), never globally.
const grpcScheme = "weft"

// DialGRPC returns a gRPC client for target:
//
//   - "orders" or "orders:50051": a mesh service, resolved as an HTTP host is
//     (static endpoints, configured DNS names, then, with a bootstrap, the
//     xDS listener of that name as for "xds:///orders:50051", else DNS on
//     the target) and balanced as HTTP requests to it are (the mesh's
//     policy with slow start, priority and locality failover, zone-aware
//     routing, outlier detection and session affinity), running in grpc-go;
//   - "xds:///orders:50051": the xDS listener of that name, its routes,
//     clusters and endpoints, through the mesh's own xDS client and ADS
//     stream, the ones its HTTP client uses (WithGRPCGoXDS hands these
//     targets to grpc-go's own xDS resolver instead);
//   - any other "scheme://..." target goes to grpc-go unchanged.
//
// The mesh supplies transport credentials; opts are applied after the
// mesh's, so they can override them.
func (m *Mesh) DialGRPC(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if target == "" {
		return nil, errors.New("weft: DialGRPC: empty target")
	}
	tel, last := m.grpcClientTelemetry(len(opts) > 0 || (strings.HasPrefix(target, "xds:") && m.cfg.grpcGoXDS != nil))
	base := append(append([]grpc.DialOption{grpc.WithTransportCredentials(m.grpcClientCreds())}, tel...), m.goldenDialOptions(target)...)
	switch {
	case strings.HasPrefix(target, "xds:") && m.cfg.grpcGoXDS != nil:
		res, err := m.xdsResolver()
		if err != nil {
			return nil, fmt.Errorf("weft: DialGRPC(%q): %w", target, err)
		}
		base = append(base, grpc.WithResolvers(res))
	case strings.HasPrefix(target, "xds:"):
		if m.xds == nil {
			return nil, fmt.Errorf("weft: DialGRPC(%q): no xDS bootstrap: set %s or %s, or use WithBootstrap", target, EnvBootstrap, EnvBootstrapConfig)
		}
		auth, host := xdsAuthority(target)
		t, opts, err := m.dialXDS(auth, host, false)
		if err != nil {
			return nil, fmt.Errorf("weft: DialGRPC(%q): %w", target, err)
		}
		target = t
		base = append(base, opts...)
	case hasScheme(target):
	case m.xds != nil && !m.isStatic(target):
		// With a control plane, a plain name is the listener an HTTP
		// request to http://<target>/ follows.
		t, opts, err := m.dialXDS("", target, true)
		if err != nil {
			return nil, fmt.Errorf("weft: DialGRPC(%q): %w", target, err)
		}
		target = t
		base = append(base, opts...)
	default:
		if m.isClosed() {
			return nil, fmt.Errorf("weft: DialGRPC(%q): %w", target, errClosed)
		}
		base = append(base, m.grpcClientResilience(target)...)
		base = append(base, m.grpcSessionOptions()...) // beneath retries: per attempt
		base = append(base, m.grpcHashOptions()...)
		target = grpcScheme + ":///" + target
		base = append(base,
			grpc.WithResolvers(m.grpcRes),
			grpc.WithDefaultServiceConfig(m.grpcServiceConfig()))
	}
	base = append(base, last...) // innermost of the mesh's interceptors
	cc, err := grpc.NewClient(target, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("weft: DialGRPC(%q): %w", target, err)
	}
	return cc, nil
}

// xdsResolver returns grpc-go's xDS resolver built from the mesh's
// bootstrap. grpc-go reads GRPC_XDS_BOOTSTRAP once per process, at start;
// the mesh hands over the bootstrap it read itself so that gRPC and HTTP
// always share one control plane. One builder (so one xDS client) serves
// every channel of the mesh.
func (m *Mesh) xdsResolver() (gresolver.Builder, error) {
	m.xdsOnce.Do(func() {
		if m.cfg.bootstrap == nil {
			m.xdsErr = fmt.Errorf("no xDS bootstrap: set %s or %s, or use WithBootstrap", EnvBootstrap, EnvBootstrapConfig)
			return
		}
		m.xdsRes, m.xdsErr = m.cfg.grpcGoXDS.NewResolver(m.cfg.bootstrap)
		if m.xdsErr != nil {
			m.xdsErr = fmt.Errorf("xDS bootstrap from %s: %w", m.cfg.bootstrapSource, m.xdsErr)
		}
	})
	return m.xdsRes, m.xdsErr
}

// xdsAuthority splits an "xds:" target into its xDS authority and the
// host its listener is named by: "", "orders:50051" for
// "xds:///orders:50051"; "a", "orders" for "xds://a/orders", whose
// listener the bootstrap's authority "a" names (gRFC A47).
func xdsAuthority(target string) (authority, host string) {
	t := strings.TrimPrefix(target, "xds:")
	if rest, ok := strings.CutPrefix(t, "//"); ok {
		// xds://<authority>/<host>; xds:///<host> has none.
		authority, host, _ = strings.Cut(rest, "/")
		return authority, host
	}
	return "", strings.TrimPrefix(t, "/")
}

// hasScheme reports whether a gRPC target names a resolver scheme.
func hasScheme(target string) bool {
	return strings.Contains(target, "://") || strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:")
}

// grpcServiceName maps a gRPC target to the service name to watch: the
// configured mesh service it names, or the target itself for DNS.
func (m *Mesh) grpcServiceName(target string) string {
	if name, ok := m.serviceName(target); ok {
		return name
	}
	return target
}

// isStatic reports whether target names a service of the static or DNS
// discovery (WEFT_ENDPOINTS, WEFT_DNS), which comes before xDS.
func (m *Mesh) isStatic(target string) bool {
	_, ok := m.serviceName(target)
	return ok
}
