package main

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStory runs the whole story headless and checks what each step
// measured, not what it printed.
func TestStory(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, logs bytes.Buffer
	o := options{duration: 10 * time.Second, rate: 200,
		log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	start := time.Now()
	sum, err := story(ctx, &out, o)
	t.Logf("story took %v\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if logs.Len() > 0 {
		t.Logf("logs:\n%s", logs.String())
	}
	if err != nil {
		t.Fatalf("story failed: %v", err)
	}
	if len(sum.Steps) != numSteps {
		t.Fatalf("%d steps ran, want %d", len(sum.Steps), numSteps)
	}
	step := func(i int) stepResult {
		r := sum.Steps[i]
		if r.Requests < 50 {
			t.Errorf("%s: only %d requests measured", r.Name, r.Requests)
		}
		return r
	}
	// near checks a split: v2's share of the answers against want
	// percent. Each answer is an independent draw by weight, so the
	// count of v2 answers is binomial; the check fails only a count that
	// chance gives less than once in 100,000 runs. At the story's 140-190
	// answers a step, that still tells a 10% canary from no canary (or
	// from 25% of the load), and 50/50 from 70/30.
	near := func(r stepResult, want float64) {
		t.Helper()
		n := r.V1 + r.V2
		if p := binomialTail(r.V2, n, want/100); p < 1e-5 {
			t.Errorf("%s: v2 took %.1f%% of %d answers, want about %.0f%% (p = %.1g)", r.Name, pct(r.V2, n), n, want, p)
		}
	}
	allOK := func(r stepResult) {
		t.Helper()
		if r.OK != r.Requests {
			t.Errorf("%s: %d of %d requests succeeded, want all", r.Name, r.OK, r.Requests)
		}
	}

	canary := step(stepCanary)
	near(canary, 10)
	allOK(canary)

	testers := step(stepTesters)
	if testers.Testers == 0 || testers.TestersV2 != testers.Testers {
		t.Errorf("testers: %d of %d answered by v2, want all", testers.TestersV2, testers.Testers)
	}
	near(testers, 10) // the others still see the canary split
	allOK(testers)

	shift := step(stepShift)
	near(shift, 50)
	allOK(shift)

	failing := step(stepFailing)
	allOK(failing)
	if failing.FailingHits == 0 || failing.Retries == 0 {
		t.Errorf("failing replica: %d 503s, %d retries; want some of each", failing.FailingHits, failing.Retries)
	}
	if failing.MaxEjected == 0 {
		t.Errorf("failing replica was never ejected")
	}

	slow := step(stepSlow)
	if slow.Overflow == 0 {
		t.Errorf("slow inventory: no request failed fast (%d timed out, %d other)", slow.Timeout, slow.Other)
	}
	// The breaker refuses without waiting for inventory. Measured where it
	// refuses, in the replica: end to end, a refused request also spends
	// whatever the machine's queues add (on a loaded 2-core machine, up to
	// the whole route timeout between the caller's write and the replica's
	// handler), and a refused retry follows an attempt that waited.
	if slow.Overflow > 0 && slow.RefusalP99 >= routeTimeout/3 {
		t.Errorf("slow inventory: the replicas took %v at p99 to pass on the breaker's refusal, want below %v, a third of the route timeout", slow.RefusalP99, routeTimeout/3)
	}
	if slow.Timeout > 0 && slow.TimeoutP50 > 2*routeTimeout {
		t.Errorf("slow inventory: timeouts took %v at p50, want about %v", slow.TimeoutP50, routeTimeout)
	}

	denied := step(stepDenied)
	if len(denied.Denied) != 1 || denied.Denied[http.StatusForbidden] == 0 {
		t.Errorf("reports was answered %v, want 403 only", denied.Denied)
	}
	allOK(denied)

	rollback := step(stepRollback)
	if rollback.V2 != 0 || rollback.V1 == 0 {
		t.Errorf("rollback: v1 %d, v2 %d answers; want v1 only", rollback.V1, rollback.V2)
	}
	allOK(rollback)

	if strings.Contains(out.String(), "\x1b") {
		t.Errorf("escape sequences written to a non-terminal")
	}
	if !strings.Contains(out.String(), "Summary") {
		t.Errorf("no summary printed")
	}
}

// binomialTail is the probability, for n independent draws each a hit
// with probability p, of a count of hits at least as far from the mean as
// k, on k's side: twice the smaller tail, at most 1.
func binomialTail(k, n int, p float64) float64 {
	switch {
	case p <= 0: // every draw misses
		return float64(b2i(k == 0))
	case p >= 1: // every draw hits
		return float64(b2i(k == n))
	}
	pmf := func(i int) float64 {
		lc, _ := math.Lgamma(float64(n + 1))
		li, _ := math.Lgamma(float64(i + 1))
		lr, _ := math.Lgamma(float64(n - i + 1))
		return math.Exp(lc - li - lr + float64(i)*math.Log(p) + float64(n-i)*math.Log1p(-p))
	}
	var below, above float64
	for i := 0; i <= n; i++ {
		if i <= k {
			below += pmf(i)
		}
		if i >= k {
			above += pmf(i)
		}
	}
	return min(1, 2*min(below, above))
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestBinomialTail(t *testing.T) {
	for _, c := range []struct {
		k, n   int
		p      float64
		lo, hi float64
	}{
		{33, 186, 0.1, 1.6e-3, 1.8e-3}, // 17.7% of 186 for a 10% split: rare, not impossible
		{0, 186, 0.1, 0, 1e-8},         // no canary at all
		{186, 186, 0.1, 0, 1e-8},       // the whole load
		{19, 186, 0.1, 0.9, 1},         // on the mean
		{100, 141, 0.5, 0, 1e-5},       // 71% of a 50/50 split
		{0, 141, 0.1, 0, 1e-5},         // no canary, in a smaller step
		{0, 141, 0, 1, 1},              // a 0% split, kept
		{1, 141, 0, 0, 0},              // a 0% split, broken
		{141, 141, 1, 1, 1},            // a 100% split, kept
	} {
		if got := binomialTail(c.k, c.n, c.p); got < c.lo || got > c.hi {
			t.Errorf("binomialTail(%d, %d, %v) = %g, want in [%g, %g]", c.k, c.n, c.p, got, c.lo, c.hi)
		}
	}
}

// TestStoryStopsWhenCancelled checks that an interrupt ends the story
// promptly and cleanly (goleak checks the goroutines after all tests).
func TestStoryStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(3*time.Second, cancel)
	var out bytes.Buffer
	start := time.Now()
	_, err := story(ctx, &out, options{duration: time.Minute, rate: 100,
		log: slog.New(slog.DiscardHandler)})
	if err != errInterrupted {
		t.Fatalf("story returned %v, want errInterrupted\n%s", err, out.String())
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("story took %v to stop", d)
	}
}

func TestOptionsChecked(t *testing.T) {
	for _, o := range []options{{duration: time.Second, rate: 100}, {duration: 20 * time.Second, rate: 0}} {
		if _, err := story(context.Background(), &bytes.Buffer{}, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
