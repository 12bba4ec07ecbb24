package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// errInterrupted is returned when the caller's context ends the story
// before its last step.
var errInterrupted = errors.New("interrupted")

// Step names, in the order the story plays them.
const (
	stepCanary = iota
	stepTesters
	stepShift
	stepFailing
	stepSlow
	stepDenied
	stepRollback
	numSteps
)

// stepResult is what one step measured.
type stepResult struct {
	Name string
	stats
	MaxInFlight int64
	MaxEjected  int
	// FailingHits is how many attempts the failing replica answered with
	// 503 (step 4).
	FailingHits int64
	// Denied counts the reports caller's answers by status (step 6).
	Denied map[int]int
}

// summary is what a run measured, for the test and the final table.
type summary struct {
	Steps   []stepResult
	Skipped int64         // ticks the load could not send: too many in flight
	Settle  time.Duration // how long after a new config its step is measured
	Elapsed time.Duration
}

// rampUp is how long the load runs before the first step, part of the
// duration, so that the first step measures a steady rate.
const rampUp = time.Second

func story(ctx context.Context, out io.Writer, o options) (*summary, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	p := printer{mu: new(sync.Mutex), out: out, ansi: o.ansi}
	begin := time.Now()
	p.heading("Weft quickstart: a shop on a proxyless mesh, everything on 127.0.0.1")
	p.line("")
	p.line("Starting a SPIFFE trust domain (shop.example), the services and the xDS control plane:")
	s, err := startShop(ctx, o.log, out)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, err
	}
	defer s.close()
	p.line("  every hop is mutual TLS; orders admits spiffe://shop.example/ns/shop/sa/frontend only")
	p.line("  orders: timeout %v, retries 2 on 5xx/gateway-error/reset, ejection after %d consecutive 5xx,", routeTimeout, consecutive5xx)
	p.line("          at most %d retries in flight per version; orders calls inventory with at most %d calls in flight", maxRetries, maxInventoryCalls)
	if o.verbose {
		p.dim("%s", meshConfig(s.v1Addrs, s.v2Addrs, 90, 10, true))
	}
	p.line("")

	if err := s.warmUp(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, errInterrupted
		}
		return nil, err
	}

	// The load runs under its own context so that it stops, and its
	// requests finish, before the shop closes.
	lctx, stopLoad := context.WithCancel(context.Background())
	l := newLoad(s, o.rate)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.run(lctx) }()
	go func() { defer wg.Done(); live(lctx, p, l, s) }()
	defer func() { stopLoad(); wg.Wait() }()

	p.line("Frontend sends %d requests/s to http://orders:8080/orders/42 (one line per second:", o.rate)
	p.line("rate, split of the answers, latency, errors, retries, breaker fast-fails, ejected endpoints).")
	if err := sleep(ctx, rampUp); err != nil {
		return nil, errInterrupted
	}

	// Each step ends with a drain: requests it started may still be in
	// flight, for at most the route timeout, and they count for it.
	drain := routeTimeout + 50*time.Millisecond
	stepTime := (o.duration-rampUp)/numSteps - drain
	// settle lets a new config reach the frontend before a step measures
	// it; over loopback that takes milliseconds.
	settle := min(300*time.Millisecond, stepTime/4)
	sum := &summary{Settle: settle}
	type step struct {
		name, intro string
		before      func() error
		configured  bool // before applies a config: measure after settle
		testers     bool
		during      func(ctx context.Context, r *stepResult)
		after       func()
	}
	failing := s.replicas[0]
	steps := [numSteps]step{
		stepCanary: {name: "canary 90/10",
			intro: "v2 is deployed as a canary: the control plane splits orders 90% v1, 10% v2."},
		stepTesters: {name: "testers → v2", testers: true,
			intro: "Testers send x-tester: true; that route sends them to v2 whatever the split."},
		stepShift: {name: "shift 50/50", configured: true,
			intro:  "The canary looks good: a new config shifts the split to 50/50.",
			before: func() error { return s.apply(50, 50, true) }},
		stepFailing: {name: "v1-a fails",
			intro:  "Replica v1-a starts answering 503: retries hide it, outlier detection ejects it.",
			before: func() error { failing.fail.Store(true); return nil },
			after:  func() { failing.fail.Store(false) }},
		stepSlow: {name: "inventory slow",
			intro: fmt.Sprintf("inventory takes %v to answer: calls wait at most the %v budget, and orders' breaker (%d calls in flight) fails the rest at once.",
				slowInventory, routeTimeout, maxInventoryCalls),
			before: func() error { s.inventorySlow.Store(true); return nil },
			after:  func() { s.inventorySlow.Store(false) }},
		stepDenied: {name: "reports denied",
			intro:  "The reports service, same trust domain, calls orders too: the policy admits frontend only.",
			during: func(ctx context.Context, r *stepResult) { r.Denied = callAsReports(ctx, s) }},
		stepRollback: {name: "rollback → v1", configured: true,
			intro:  "Rollback: a new config sends everything, testers included, to v1.",
			before: func() error { return s.apply(100, 0, false) }},
	}

	for i, st := range steps {
		r := stepResult{Name: st.name}
		p.line("")
		p.heading("%d) %s", i+1, st.intro)
		l.setPhase(phase{step: i, measured: !st.configured, testers: st.testers})
		failBefore := failing.hits.Load()
		if st.before != nil {
			if err := st.before(); err != nil {
				return nil, err
			}
		}
		sctx, cancel := context.WithTimeout(ctx, stepTime)
		var dwg sync.WaitGroup
		if st.during != nil {
			dwg.Add(1)
			go func() { defer dwg.Done(); st.during(sctx, &r) }()
		}
		ejected := watchEjections(sctx, s)
		if st.configured {
			sleep(sctx, settle)
			l.setPhase(phase{step: i, measured: true, testers: st.testers})
		}
		<-sctx.Done()
		cancel()
		dwg.Wait()
		r.MaxEjected = <-ejected
		if i == stepFailing {
			r.FailingHits = failing.hits.Load() - failBefore
		}
		if st.after != nil {
			st.after()
		}
		l.endStep(i)
		if ctx.Err() != nil {
			break
		}
		// Requests started in the step may still be in flight: wait for
		// the longest the mesh lets one take, then count.
		l.setPhase(phase{step: -1})
		sleep(ctx, drain)
		var ss []sample
		ss, r.MaxInFlight = l.stepSamples(i)
		r.stats = summarize(ss)
		sum.Steps = append(sum.Steps, r)
		p.line("   → %s", r.outcome(i))
	}
	stopLoad()
	wg.Wait()
	sum.Skipped = l.skipped.Load()
	sum.Elapsed = time.Since(begin)
	printSummary(p, sum)
	if ctx.Err() != nil {
		return sum, errInterrupted
	}
	return sum, sum.check()
}

// outcome is a step's measured result in one line.
func (r *stepResult) outcome(i int) string {
	split := fmt.Sprintf("v1 %.1f%% / v2 %.1f%% of %d answers", pct(r.V1, r.V1+r.V2), pct(r.V2, r.V1+r.V2), r.V1+r.V2)
	success := fmt.Sprintf("%d/%d succeeded", r.OK, r.Requests)
	switch i {
	case stepTesters:
		return fmt.Sprintf("testers: %d/%d answered by v2; others: %s", r.TestersV2, r.Testers, split)
	case stepFailing:
		return fmt.Sprintf("%s; v1-a answered 503 %d times, each retried (%d retries); %d endpoint(s) ejected",
			success, r.FailingHits, r.Retries, r.MaxEjected)
	case stepSlow:
		return fmt.Sprintf("%s; %d failed fast by the breaker (p99 %s, retries included; orders refused in %s), %d timed out (p50 %s); at most %d in flight",
			success, r.Overflow, ms(r.OverflowP99), short(r.RefusalP99), r.Timeout, ms(r.TimeoutP50), r.MaxInFlight)
	case stepDenied:
		return fmt.Sprintf("reports got %s; frontend: %s", statuses(r.Denied), success)
	}
	return fmt.Sprintf("%s; %s", split, success)
}

// check returns an error when a step did not show what it is about; the
// split of the canary is random, so only the deterministic outcomes count.
func (s *summary) check() error {
	var bad []string
	for i, r := range s.Steps {
		switch {
		case i == stepTesters && (r.Testers == 0 || r.TestersV2 != r.Testers):
			bad = append(bad, fmt.Sprintf("testers reached v2 %d of %d times", r.TestersV2, r.Testers))
		case i == stepFailing && r.OK != r.Requests:
			bad = append(bad, fmt.Sprintf("%d of %d requests failed while v1-a was failing", r.Requests-r.OK, r.Requests))
		case i == stepDenied && (len(r.Denied) != 1 || r.Denied[http.StatusForbidden] == 0):
			bad = append(bad, "reports was answered "+statuses(r.Denied)+", want 403 only")
		case i == stepRollback && (r.V2 != 0 || r.OK != r.Requests):
			bad = append(bad, fmt.Sprintf("after the rollback, v2 answered %d and %d requests failed", r.V2, r.Requests-r.OK))
		}
	}
	if len(bad) > 0 {
		return errors.New("unexpected: " + strings.Join(bad, "; "))
	}
	return nil
}

func printSummary(p printer, s *summary) {
	p.line("")
	p.heading("Summary (measured; steps that apply a config are measured from %v after it)", s.Settle)
	p.line("  %-16s %6s %7s %7s %8s %8s %8s %7s %9s %7s", "step", "reqs", "v1", "v2", "success", "p50", "p99", "retries", "fast-fail", "ejected")
	for _, r := range s.Steps {
		v1, v2 := "-", "-"
		// A split over a handful of answers says nothing.
		if n := r.V1 + r.V2; n >= 20 {
			v1, v2 = fmt.Sprintf("%.1f%%", pct(r.V1, n)), fmt.Sprintf("%.1f%%", pct(r.V2, n))
		}
		p.line("  %-16s %6d %7s %7s %7.1f%% %8s %8s %7d %9d %7d", r.Name, r.Requests,
			v1, v2, pct(r.OK, r.Requests), ms(r.P50), ms(r.P99), r.Retries, r.Overflow, r.MaxEjected)
	}
	for i, r := range s.Steps {
		switch i {
		case stepTesters:
			p.line("  testers → v2: %d of %d (%.0f%%)", r.TestersV2, r.Testers, pct(r.TestersV2, r.Testers))
		case stepSlow:
			p.line("  slow inventory: %d failed fast (p99 %s, retries included; orders refused in %s at p99), %d timed out at the %v route timeout, at most %d in flight",
				r.Overflow, ms(r.OverflowP99), short(r.RefusalP99), r.Timeout, routeTimeout, r.MaxInFlight)
		case stepDenied:
			p.line("  reports → orders: %s", statuses(r.Denied))
		}
	}
	if s.Skipped > 0 {
		p.line("  (%d requests not sent: the frontend already had too many in flight)", s.Skipped)
	}
	p.line("  split and latency exclude testers; the v1/v2 columns count answers; took %v", s.Elapsed.Round(100*time.Millisecond))
}

// live prints a line per second while the load runs.
func live(ctx context.Context, p printer, l *load, s *shop) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st := summarize(l.takeSecond())
		p.dim("   [%3.0fs] %4d req/s  v1 %3.0f%% v2 %3.0f%%  p50 %6s p99 %6s  errors %3d  retries %3d  fast-fail %3d  ejected %d",
			time.Since(start).Seconds(), st.Requests, pct(st.V1, st.V1+st.V2), pct(st.V2, st.V1+st.V2),
			ms(st.P50), ms(st.P99), st.Requests-st.OK, st.Retries, st.Overflow, s.ejected())
	}
}

// watchEjections samples the number of ejected orders endpoints until ctx
// ends and sends the largest seen.
func watchEjections(ctx context.Context, s *shop) <-chan int {
	ch := make(chan int, 1)
	go func() {
		most := s.ejected()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				ch <- max(most, s.ejected())
				return
			case <-t.C:
				most = max(most, s.ejected())
			}
		}
	}()
	return ch
}

// callAsReports calls orders as the reports service, ten times a second
// until ctx ends, and counts the answers by status (0: no answer).
func callAsReports(ctx context.Context, s *shop) map[int]int {
	got := map[int]int{}
	c := s.reports.HTTPClient()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://orders:8080/orders/42", nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			got[resp.StatusCode]++
		} else if ctx.Err() == nil {
			got[0]++
		}
		cancel()
		select {
		case <-ctx.Done():
			return got
		case <-t.C:
		}
	}
}

func statuses(m map[int]int) string {
	if len(m) == 0 {
		return "no answer"
	}
	var parts []string
	for _, code := range []int{http.StatusOK, http.StatusForbidden, 0} {
		if n := m[code]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d× %s", n, statusText(code)))
		}
	}
	for code, n := range m {
		if code != http.StatusOK && code != http.StatusForbidden && code != 0 {
			parts = append(parts, fmt.Sprintf("%d× %s", n, statusText(code)))
		}
	}
	return strings.Join(parts, ", ")
}

func statusText(code int) string {
	if code == 0 {
		return "error"
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// short formats a duration that may be microseconds.
func short(d time.Duration) string {
	if d < time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	return ms(d)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
