package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun checks the harness on a short, light run: every request is
// answered, hedging never sends fewer backend requests than client
// requests nor more than two per request, and the table has a row per run.
// Latencies are not checked; on a shared machine they prove nothing.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	// A tenth of responses slowed, so that even 25 requests see hedges.
	results, err := run(context.Background(), []string{"-rate", "50", "-duration", "500ms", "-backends", "3", "-slow-share", "0.1", "-calibrate", "300ms"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(results) != 3 {
		t.Fatalf("got %d results, want 3\n%s", len(results), out.String())
	}
	for i, r := range results {
		if r.requests != 25 || r.errors != 0 {
			t.Errorf("%s: %d requests, %d errors; want 25, 0", r.name, r.requests, r.errors)
		}
		if i == 0 && r.hits != int64(r.requests) {
			t.Errorf("%s: %d backend requests for %d requests", r.name, r.hits, r.requests)
		}
		if r.hits < int64(r.requests) || r.hits > 2*int64(r.requests) {
			t.Errorf("%s: %d backend requests for %d requests, want between 1 and 2 each", r.name, r.hits, r.requests)
		}
		if !(r.p50 <= r.p95 && r.p95 <= r.p99 && r.p99 <= r.p999 && r.p999 <= r.max) {
			t.Errorf("%s: quantiles out of order", r.name)
		}
		if !strings.Contains(out.String(), "| "+r.name+" |") {
			t.Errorf("no row for %q", r.name)
		}
	}
	if !strings.Contains(out.String(), "| client |") {
		t.Errorf("no table header:\n%s", out.String())
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-rate", "0"}, {"-policy", "nope"}, {"-backends", "1"}, {"-slow-share", "2"}} {
		var out bytes.Buffer
		if _, err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
