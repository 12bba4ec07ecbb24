package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun checks the harness on a short, light run: every request is sent,
// answered and counted once, and the table has a row per run. Latencies are
// not checked; on a shared machine they prove nothing.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	results, err := run(context.Background(), []string{"-rate", "40", "-duration", "500ms", "-backends", "3",
		"-policies", "round_robin,least_request,p2c_ewma,grpc_round_robin"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(results) != 8 {
		t.Fatalf("got %d results, want 8 (four policies, healthy and slow)\n%s", len(results), out.String())
	}
	for _, r := range results {
		if r.requests != 20 || r.errors != 0 || r.hits != int64(r.requests) {
			t.Errorf("%s: %d requests, %d errors, %d backend hits; want 20, 0, 20", r.name, r.requests, r.errors, r.hits)
		}
		if !(r.p50 <= r.p99 && r.p99 <= r.p999 && r.p999 <= r.max) {
			t.Errorf("%s: quantiles out of order: %v %v %v %v", r.name, r.p50, r.p99, r.p999, r.max)
		}
		if !strings.Contains(out.String(), "| "+r.name+" |") {
			t.Errorf("no row for %s", r.name)
		}
	}
	if !strings.Contains(out.String(), "| policy |") {
		t.Errorf("no table header:\n%s", out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-rate", "0"}, {"-policies", "nope"}, {"-policies", "p2c_ewma,p2c_ewma"}, {"-backends", "1"}} {
		var out bytes.Buffer
		if _, err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
