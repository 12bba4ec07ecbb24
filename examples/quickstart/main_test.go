package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestQuickstartSpreadsEveryService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out bytes.Buffer
	sum, err := story(ctx, &out, 300, "round_robin")
	if err != nil {
		t.Fatalf("quickstart failed: %v\n%s", err, out.String())
	}
	for name, hits := range map[string]map[string]int{"HTTP": sum.httpHits, "gRPC": sum.grpcHits} {
		if len(hits) != 3 {
			t.Errorf("%s reached %d replicas, want 3: %v", name, len(hits), hits)
		}
		for addr, n := range hits {
			if n < 80 || n > 120 {
				t.Errorf("%s replica %s took %d of 300, want 80..120", name, addr, n)
			}
		}
	}
	if !strings.Contains(out.String(), "600 of 600 requests succeeded") {
		t.Errorf("summary line missing:\n%s", out.String())
	}
}
