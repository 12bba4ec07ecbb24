package balancer

import (
	"context"
	"errors"
	"sync"
	"testing"

	gbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/connectivity"
)

// statesCC records the states a balancer publishes to its channel.
type statesCC struct {
	gbalancer.ClientConn
	mu   sync.Mutex
	last gbalancer.State
}

func (c *statesCC) UpdateState(s gbalancer.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.last = s
}

func (c *statesCC) picker() gbalancer.Picker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Picker
}

type fixedPicker struct{ err error }

func (p fixedPicker) Pick(gbalancer.PickInfo) (gbalancer.PickResult, error) {
	return gbalancer.PickResult{}, p.err
}

// A cluster's child replaced by a new one (its CDS resource changed) can
// still publish while it closes: its SubConns report their shutdown from
// grpc-go's goroutines. That late state must not replace its successor's:
// the successor, READY, publishes nothing more, and every call routed to
// the cluster would wait for a connection until its deadline (seen in
// TestBehindIstioAgent under load).
func TestGRPCClustersIgnoresAReplacedChildsState(t *testing.T) {
	cc := &statesCC{}
	b := &grpcClusters{cc: cc, children: map[string]*clusterChild{}}
	old := &childCC{ClientConn: cc, parent: b, name: "orders"}
	b.current = map[string]*childCC{"orders": old}
	old.UpdateState(gbalancer.State{ConnectivityState: connectivity.Ready, Picker: fixedPicker{errors.New("old")}})

	// The child is replaced: what the parent does in UpdateClientConnState.
	successor := &childCC{ClientConn: cc, parent: b, name: "orders"}
	b.removeChild("orders", &clusterChild{cc: old, bal: &grpcBalancer{cc: old, subConns: map[string]*grpcSubConn{}}})
	b.mu.Lock()
	b.current["orders"] = successor
	b.mu.Unlock()
	successor.UpdateState(gbalancer.State{ConnectivityState: connectivity.Ready, Picker: fixedPicker{errors.New("successor")}})
	old.UpdateState(gbalancer.State{ConnectivityState: connectivity.Connecting, Picker: fixedPicker{gbalancer.ErrNoSubConnAvailable}})

	ctx := ContextWithGRPCRoute(context.Background(), &GRPCRoute{Cluster: "orders"})
	_, err := cc.picker().Pick(gbalancer.PickInfo{Ctx: ctx})
	if err == nil || err.Error() != "successor" {
		t.Fatalf("pick for the cluster = %v, want the successor's picker (a replaced child's late state won)", err)
	}
}
