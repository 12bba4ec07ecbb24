package balancer_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	gbalancer "google.golang.org/grpc/balancer"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resolver"
)

func TestRegistered(t *testing.T) {
	names := balancer.Names()
	for _, name := range allPolicies {
		b := balancer.Get(name)
		if b == nil || b.Name() != name {
			t.Errorf("Get(%q) = %v, want the %s policy (registered: %v)", name, b, name, names)
		}
		if gbalancer.Get(balancer.GRPCName(name)) == nil {
			t.Errorf("%s is not registered with grpc-go as %s", name, balancer.GRPCName(name))
		}
	}
}

// TestNoServingEndpoint checks every policy fails picks with
// ErrNoHealthyEndpoint when no endpoint may serve, and picks again once
// one may.
func TestNoServingEndpoint(t *testing.T) {
	for _, name := range allPolicies {
		t.Run(name, func(t *testing.T) {
			eps := endpoints(1, 2)
			eps[0].Health, eps[1].Health = resolver.Unhealthy, resolver.Draining
			for _, set := range [][]resolver.Endpoint{nil, eps} {
				c := newCluster(t, balancer.Get(name), "", set)
				if _, err := c.Pick(balancer.PickInfo{}); !errors.Is(err, balancer.ErrNoHealthyEndpoint) {
					t.Errorf("%d endpoints, none serving: Pick error %v, want ErrNoHealthyEndpoint", len(set), err)
				}
				eps[1].Health = resolver.Healthy
				c.Update(eps)
				if r, err := c.Pick(balancer.PickInfo{}); err != nil || r.Endpoint.Addr != eps[1].Addr {
					t.Errorf("after %s became healthy: Pick = %v, %v", eps[1].Addr, r.Endpoint, err)
				} else {
					r.Finish(balancer.DoneInfo{})
				}
				eps[1].Health = resolver.Draining
			}
		})
	}
}

// TestOnlyServingPicked checks that no policy picks an endpoint whose
// health forbids traffic, with and without request hashes.
func TestOnlyServingPicked(t *testing.T) {
	eps := equal(12)
	for i := range eps {
		eps[i].Weight = uint32(1 + i%3)
		switch i % 4 {
		case 1:
			eps[i].Health = resolver.Unhealthy
		case 2:
			eps[i].Health = resolver.Draining
		case 3:
			eps[i].Health = resolver.Healthy
		}
	}
	for _, name := range allPolicies {
		t.Run(name, func(t *testing.T) {
			c := newCluster(t, balancer.Get(name), "", eps)
			ks := keys(2000)
			counts := pickCounts(t, c, len(ks), func(i int) balancer.PickInfo {
				return balancer.PickInfo{Hash: ks[i], HasHash: i%2 == 0}
			})
			for _, e := range eps {
				if !e.Health.Serving() && counts[e.Addr] > 0 {
					t.Errorf("%s (%v) picked %d times", e.Addr, e.Health, counts[e.Addr])
				}
			}
			if len(counts) != 6 {
				t.Errorf("picks went to %d endpoints, want all 6 serving ones: %v", len(counts), counts)
			}
		})
	}
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		policy, config string
		wantErr        string // "" for none
	}{
		{balancer.LeastRequest, ``, ""},
		{balancer.LeastRequest, `null`, ""},
		{balancer.LeastRequest, `{}`, ""},
		{balancer.LeastRequest, `{"choiceCount":3,"activeRequestBias":0.5}`, ""},
		{balancer.LeastRequest, `{"choiceCount":100}`, ""}, // capped at 10
		{balancer.LeastRequest, `{"choiceCount":1}`, "choiceCount 1: must be at least 2"},
		{balancer.LeastRequest, `{"activeRequestBias":-1}`, "activeRequestBias"},
		{balancer.LeastRequest, `{"choiceCount":"two"}`, "invalid config"},
		{balancer.P2CEWMA, `{"decayWindow":"1m30s"}`, ""},
		{balancer.P2CEWMA, `{"decayWindow":"0s"}`, "must be positive"},
		{balancer.P2CEWMA, `{"decayWindow":10}`, "duration must be a string"},
		{balancer.P2CEWMA, `{"decayWindow":"soon"}`, "invalid duration"},
		{balancer.RingHash, `{"minRingSize":2,"maxRingSize":8388608}`, ""},
		{balancer.RingHash, `{"maxRingSize":8388609}`, "must be at most 8388608"},
		{balancer.RingHash, `{"minRingSize":5000,"maxRingSize":4000}`, "greater than maxRingSize"},
		{balancer.RingHash, `{"minRingSize":5000}`, "greater than maxRingSize"}, // default max is 4096
		{balancer.Maglev, `{"tableSize":251}`, ""},
		{balancer.Maglev, `{"tableSize":5000011}`, ""},
		{balancer.Maglev, `{"tableSize":65536}`, "must be a prime"},
		{balancer.Maglev, `{"tableSize":5000101}`, "must be a prime no larger than"},
		{balancer.Maglev, `[1]`, "invalid config"},
	} {
		t.Run(tc.policy+" "+tc.config, func(t *testing.T) {
			p := balancer.Get(tc.policy).(balancer.ConfigParser)
			cfg, err := p.ParseConfig(json.RawMessage(tc.config))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseConfig = %v, want no error", err)
				}
				// The parsed config must build a working balancer.
				c := balancer.NewCluster(balancer.Get(tc.policy), cfg)
				defer c.Close()
				c.Update(endpoints(1, 2))
				r, err := c.Pick(balancer.PickInfo{})
				if err != nil {
					t.Fatalf("Pick with config %s: %v", tc.config, err)
				}
				r.Finish(balancer.DoneInfo{})
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "balancer: "+tc.policy+": ") {
				t.Errorf("ParseConfig error = %v, want \"balancer: %s: ...%s...\"", err, tc.policy, tc.wantErr)
			}
		})
	}
}

// TestPickDoesNotAllocate checks the hot path, a pick and its Finish, for
// every policy.
func TestPickDoesNotAllocate(t *testing.T) {
	for _, name := range allPolicies {
		t.Run(name, func(t *testing.T) {
			eps := endpoints(1, 2, 3)
			c := newCluster(t, balancer.Get(name), "", eps)
			var h uint64
			allocs := testing.AllocsPerRun(1000, func() {
				h += 0x9e3779b97f4a7c15
				r, err := c.Pick(balancer.PickInfo{Hash: h, HasHash: h&1 == 0})
				if err != nil {
					t.Fatal(err)
				}
				r.Finish(balancer.DoneInfo{Latency: time.Millisecond})
			})
			if allocs != 0 {
				t.Errorf("%.1f allocations a pick, want 0", allocs)
			}
		})
	}
}

// TestConcurrentPicksAndUpdates runs picks (with feedback) on several
// goroutines while endpoints change underneath, for the race detector,
// and checks in-flight counts return to zero.
func TestConcurrentPicksAndUpdates(t *testing.T) {
	for _, name := range allPolicies {
		t.Run(name, func(t *testing.T) {
			eps := endpoints(1, 2, 3, 4, 5)
			c := newCluster(t, balancer.Get(name), "", eps)
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := range 2000 {
						r, err := c.Pick(balancer.PickInfo{Hash: uint64(i * g), HasHash: g%2 == 0})
						if err != nil {
							t.Error(err)
							return
						}
						r.Finish(balancer.DoneInfo{Latency: time.Duration(i%7) * time.Millisecond})
					}
				})
			}
			for i := range 50 {
				next := endpoints(1, 2, 3, 4, 5)
				next[i%5].Weight = uint32(i)
				next[(i+1)%5].Health = resolver.Unhealthy
				c.Update(next)
			}
			wg.Wait()
			for _, e := range c.Endpoints() {
				if n := e.InFlight(); n != 0 {
					t.Errorf("%s: %d in flight after all requests finished", e.Addr, n)
				}
			}
		})
	}
}

// TestClusterPickAvoidsTriedEndpoints: a pick for a retry or hedge goes to
// an endpoint not tried yet whenever one may serve, even under a policy
// whose draws keep landing on the tried one, as ring_hash's do for one
// hash; only when every endpoint was tried does it go back to one.
func TestClusterPickAvoidsTriedEndpoints(t *testing.T) {
	c := newCluster(t, balancer.Get(balancer.RingHash), "", equal(3))
	info := balancer.PickInfo{Hash: 42, HasHash: true}
	first, err := c.Pick(info)
	if err != nil {
		t.Fatal(err)
	}
	first.Finish(balancer.DoneInfo{})
	tried := triedSet{first.Endpoint.Addr: true}
	for range 20 {
		info.Tried = tried
		r, err := c.Pick(info)
		if err != nil {
			t.Fatal(err)
		}
		r.Finish(balancer.DoneInfo{})
		if tried[r.Endpoint.Addr] {
			t.Fatalf("tried %v, picked %s again although an endpoint was left", tried, r.Endpoint.Addr)
		}
	}
	for _, e := range equal(3) {
		tried[e.Addr] = true
	}
	if r, err := c.Pick(info); err != nil {
		t.Errorf("every endpoint tried: %v, want a pick of one of them", err)
	} else {
		r.Finish(balancer.DoneInfo{})
	}
}
