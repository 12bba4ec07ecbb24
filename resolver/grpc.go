package resolver

import (
	"errors"
	"strings"

	"google.golang.org/grpc/attributes"
	gresolver "google.golang.org/grpc/resolver"
)

type grpcEndpointKey struct{}

// GRPCEndpointKey is the attribute key under which the gRPC resolver stores
// each address's Endpoint (weight, locality, health) for Weft's balancers.
var GRPCEndpointKey any = grpcEndpointKey{}

// GRPCBuilder is a grpc-go resolver.Builder over a Discovery. A target
// "scheme:///orders:50051" watches the service "orders:50051" when the
// Discovery knows it and "orders" otherwise, the same lookup the HTTP path
// makes for the URL host "orders:50051".
type GRPCBuilder struct {
	scheme string
	d      Discovery
	name   func(target string) string
}

// NewGRPCBuilder returns a builder for scheme over d. serviceName maps the
// target's endpoint (the part after "scheme:///") to the name to watch;
// nil means the endpoint as written.
func NewGRPCBuilder(scheme string, d Discovery, serviceName func(target string) string) *GRPCBuilder {
	if serviceName == nil {
		serviceName = func(t string) string { return t }
	}
	return &GRPCBuilder{scheme: scheme, d: d, name: serviceName}
}

// Scheme implements resolver.Builder.
func (b *GRPCBuilder) Scheme() string { return b.scheme }

// Build implements resolver.Builder.
func (b *GRPCBuilder) Build(target gresolver.Target, cc gresolver.ClientConn, _ gresolver.BuildOptions) (gresolver.Resolver, error) {
	ep := strings.TrimPrefix(target.Endpoint(), "/")
	if ep == "" {
		return nil, errors.New("resolver: empty target")
	}
	r := &grpcResolver{d: b.d, service: b.name(ep)}
	r.cancel = b.d.Watch(r.service, WatcherFunc(func(s State) {
		if s.Err != nil && len(s.Endpoints) == 0 {
			cc.ReportError(s.Err)
			return
		}
		eps := make([]gresolver.Endpoint, 0, len(s.Endpoints))
		for _, e := range s.Endpoints {
			eps = append(eps, gresolver.Endpoint{
				Addresses:  []gresolver.Address{{Addr: e.Addr}},
				Attributes: attributes.New(GRPCEndpointKey, e),
			})
		}
		// An error here means the balancer rejected the state (for example,
		// no serving endpoint); grpc-go then calls ResolveNow itself.
		_ = cc.UpdateState(gresolver.State{Endpoints: eps})
	}))
	return r, nil
}

type grpcResolver struct {
	d       Discovery
	service string
	cancel  func()
}

func (r *grpcResolver) ResolveNow(gresolver.ResolveNowOptions) { r.d.ResolveNow(r.service) }
func (r *grpcResolver) Close()                                 { r.cancel() }
