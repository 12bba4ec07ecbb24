package mesh

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
)

// Request hashes for consistent hashing (ring_hash, maglev): the hash
// source of services not configured by xDS, and what the client itself
// contributes to xDS hash policies (its channel id and source IP).

// The variables of the hash source of services outside xDS.
const (
	EnvLBHashHeader = "WEFT_LB_HASH_HEADER"
	EnvLBHashCookie = "WEFT_LB_HASH_COOKIE"
)

// WithLBHashHeader makes ring_hash and maglev, for services not configured
// by xDS, place each request by the hash of the named request header (on
// gRPC, the call's metadata key): requests with the same value go to the
// same endpoint, as under an xDS route's hash_policy on that header. A
// request without the header goes where a random hash sends it. It
// overrides WEFT_LB_HASH_HEADER; the policy (WithLBPolicy,
// WEFT_LB_POLICY) must be ring_hash or maglev.
func WithLBHashHeader(name string) Option {
	return optionFunc(func(c *config) error {
		if err := checkHashHeader(name); err != nil {
			return fmt.Errorf("mesh: WithLBHashHeader: %w", err)
		}
		c.hashHeader, c.hashSource = name, "WithLBHashHeader"
		return nil
	})
}

// WithLBHashCookie makes ring_hash and maglev, for HTTP requests to
// services not configured by xDS, place each request by the hash of the
// named cookie's value, as an xDS cookie hash_policy does (without
// generating the cookie: a request without it goes where a random hash
// sends it). gRPC calls carry no cookies and hash only the header of
// WithLBHashHeader, as grpc-go ignores cookie hash policies. With both, a
// request's hash combines the header's and the cookie's, as Envoy
// combines two hash policies. It overrides WEFT_LB_HASH_COOKIE.
func WithLBHashCookie(name string) Option {
	return optionFunc(func(c *config) error {
		if err := checkHashCookie(name); err != nil {
			return fmt.Errorf("mesh: WithLBHashCookie: %w", err)
		}
		c.hashCookie, c.hashSource = name, "WithLBHashCookie"
		return nil
	})
}

// hashFromEnv reads WEFT_LB_HASH_HEADER and WEFT_LB_HASH_COOKIE.
func hashFromEnv(getenv func(string) string, c *config) error {
	if v := getenv(EnvLBHashHeader); v != "" {
		if err := checkHashHeader(v); err != nil {
			return &EnvError{Var: EnvLBHashHeader, Value: v, Err: err}
		}
		c.hashHeader, c.hashSource = v, EnvLBHashHeader
	}
	if v := getenv(EnvLBHashCookie); v != "" {
		if err := checkHashCookie(v); err != nil {
			return &EnvError{Var: EnvLBHashCookie, Value: v, Err: err}
		}
		c.hashCookie, c.hashSource = v, EnvLBHashCookie
	}
	return nil
}

func checkHashHeader(name string) error {
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("%q is not a header name", name)
	}
	// gRFC A76 refuses binary metadata as a hash key: its value is not
	// the bytes the caller set.
	if strings.HasSuffix(strings.ToLower(name), "-bin") {
		return fmt.Errorf("%q is binary metadata, which cannot be hashed", name)
	}
	return nil
}

func checkHashCookie(name string) error {
	if !httpguts.ValidHeaderFieldName(name) { // a cookie name is an RFC 7230 token
		return fmt.Errorf("%q is not a cookie name", name)
	}
	return nil
}

// checkHash refuses a hash source with a policy that does not hash.
func (c *config) checkHash() error {
	if c.hashHeader == "" && c.hashCookie == "" {
		return nil
	}
	if c.lbPolicy != balancer.RingHash && c.lbPolicy != balancer.Maglev {
		return fmt.Errorf("mesh: %s: a hash source applies to ring_hash and maglev, not %s (set %s)",
			c.hashSource, c.lbPolicy, EnvLBPolicy)
	}
	return nil
}

// hashPolicies returns the hash source of services outside xDS as the hash
// policies of an xDS route, so both are computed by one piece of code.
func (c *config) hashPolicies() []xds.HashPolicy {
	var out []xds.HashPolicy
	if c.hashHeader != "" {
		out = append(out, xds.HashPolicy{Kind: xds.HashHeader, Name: http.CanonicalHeaderKey(c.hashHeader)})
	}
	if c.hashCookie != "" {
		out = append(out, xds.HashPolicy{Kind: xds.HashCookie, Name: c.hashCookie})
	}
	return out
}

// grpcHashOptions returns the interceptors that hash the calls of a
// channel to a service outside xDS by the mesh's hash source, or nil.
func (m *Mesh) grpcHashOptions() []grpc.DialOption {
	hp := m.hashPolicies
	if len(hp) == 0 {
		return nil
	}
	withHash := func(ctx context.Context) context.Context {
		md, _ := metadata.FromOutgoingContext(ctx)
		hdr := make(http.Header, len(hp))
		for _, p := range hp {
			if vs := md.Get(p.Name); p.Kind == xds.HashHeader && len(vs) > 0 {
				hdr[http.CanonicalHeaderKey(p.Name)] = vs
			}
		}
		h, ok := route.GRPCHash(hdr, hp, route.Client{})
		if !ok {
			return ctx
		}
		return balancer.ContextWithGRPCRoute(ctx, &balancer.GRPCRoute{Hash: h, HasHash: true})
	}
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withHash(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withHash(ctx), desc, cc, method, opts...)
		}),
	}
}

// sourceIP is the address that hash policies on the connection's source IP
// (connection_properties.source_ip, Istio's useSourceIp) hash. Envoy
// hashes the downstream connection's source address; in a sidecar that is
// the application's own (pod) IP, the same for every request the
// application sends, so all of them stick to one endpoint. A proxyless
// client is that application, and its source IP is the process's own:
// the first of the bootstrap node's INSTANCE_IPS (istio-agent writes the
// pod's addresses there), else the first global unicast address of the
// host's interfaces, else the loopback address. Every client in the
// process, HTTP or gRPC, hashes the same address, as every request from a
// pod does behind its sidecar.
func sourceIP(meta *structpb.Struct) string {
	if v := meta.GetFields()["INSTANCE_IPS"].GetStringValue(); v != "" {
		first, _, _ := strings.Cut(v, ",")
		if ip := net.ParseIP(strings.TrimSpace(first)); ip != nil {
			return ip.String()
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// hashClient returns the identity hash policies see of a new HTTP
// transport or gRPC channel: a random id, and the source IP when the mesh
// follows a control plane (only xDS routes hash it).
func (m *Mesh) hashClient() route.Client {
	if m.xds == nil {
		return route.NewClient("")
	}
	return route.NewClient(m.xds.sourceIP)
}
