package xdstest

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Agent is an ADS proxy that behaves as istio-agent does between a
// proxyless workload and istiod: it keeps one stream per workload (by node
// id) and, when the workload opens another, closes the previous one with
// "registered overlapping stream; closing previous" (istio/istio#53532,
// grpc/grpc-go#7691). A workload that opens a stream per gRPC channel
// loses its other streams' configuration this way. Only state-of-the-world
// ADS is proxied, as istio-agent's proxyless clients use it.
type Agent struct {
	// Addr is the agent's host:port on 127.0.0.1.
	Addr string

	upstream *grpc.ClientConn
	gs       *grpc.Server
	done     chan struct{}

	mu       sync.Mutex
	streams  map[string]*agentStream // by node id
	opened   int
	overlaps int
}

// errOverlap is istio-agent's reason for closing a workload's stream.
var errOverlap = errors.New("registered overlapping stream; closing previous")

// NewAgent starts an agent in front of the management server at upstream
// and stops it when tb ends.
func NewAgent(tb testing.TB, upstream string) *Agent {
	tb.Helper()
	cc, err := grpc.NewClient(upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("xdstest: agent upstream: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("xdstest: agent listen: %v", err)
	}
	a := &Agent{Addr: lis.Addr().String(), upstream: cc, gs: grpc.NewServer(), done: make(chan struct{}), streams: map[string]*agentStream{}}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(a.gs, agentADS{a: a})
	go func() {
		defer close(a.done)
		_ = a.gs.Serve(lis)
	}()
	tb.Cleanup(func() {
		a.gs.Stop()
		<-a.done
		cc.Close()
	})
	return a
}

// Bootstrap returns a bootstrap that points node at the agent.
func (a *Agent) Bootstrap(node string) []byte { return BootstrapJSON(node, a.Addr) }

// Streams returns how many streams workloads opened through the agent and
// how many of them it closed because the same workload opened another.
func (a *Agent) Streams() (opened, overlaps int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.opened, a.overlaps
}

type agentStream struct{ cancel context.CancelCauseFunc }

type agentADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	a *Agent
}

func (s agentADS) StreamAggregatedResources(down discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	first, err := down.Recv()
	if err != nil {
		return err
	}
	node := first.GetNode().GetId()
	ctx, cancel := context.WithCancelCause(down.Context())
	defer cancel(nil)
	a := s.a
	self := &agentStream{cancel: cancel}
	a.mu.Lock()
	a.opened++
	if prev := a.streams[node]; prev != nil {
		a.overlaps++
		prev.cancel(errOverlap)
	}
	a.streams[node] = self
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		if a.streams[node] == self { // a newer stream may have replaced it
			delete(a.streams, node)
		}
		a.mu.Unlock()
	}()

	up, err := discoveryv3.NewAggregatedDiscoveryServiceClient(a.upstream).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := up.Send(first); err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() {
		for {
			resp, err := up.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := down.Send(resp); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		for {
			req, err := down.Recv()
			if err != nil {
				errc <- err
				return
			}
			if err := up.Send(req); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	if context.Cause(ctx) == errOverlap {
		err = status.Error(codes.Aborted, errOverlap.Error())
	}
	cancel(nil)
	// The goroutine reading down ends with the handler; the one reading up
	// ends with ctx.
	return err
}
