package balancer_test

import (
	"testing"

	"github.com/weftmesh/weft/balancer"
)

// TestLastSucceededFollowsOutcomes: an endpoint's LastSucceeded is false
// until a request finishes with Success, follows each later outcome, and
// ignores requests the caller canceled.
func TestLastSucceededFollowsOutcomes(t *testing.T) {
	c := newCluster(t, balancer.Get(balancer.RoundRobin), "", equal(1))
	e := c.Endpoints()[0]
	if e.LastSucceeded() {
		t.Fatal("LastSucceeded() = true before any request")
	}
	for i, tc := range []struct {
		outcome balancer.Outcome
		want    bool
	}{
		{balancer.Canceled, false},
		{balancer.Success, true},
		{balancer.Canceled, true},
		{balancer.GatewayError, false},
		{balancer.Success, true},
		{balancer.ConnectFailure, false},
	} {
		res, err := c.Pick(balancer.PickInfo{})
		if err != nil {
			t.Fatal(err)
		}
		res.Finish(balancer.DoneInfo{Outcome: tc.outcome})
		if got := e.LastSucceeded(); got != tc.want {
			t.Errorf("after request %d (%s): LastSucceeded() = %v, want %v", i, tc.outcome, got, tc.want)
		}
	}
}
