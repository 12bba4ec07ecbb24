package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/resilience"
)

// outcome is how one request ended, as the caller saw it.
type outcome int

const (
	outcomeOK       outcome = iota
	outcomeStatus           // an HTTP answer other than 200, not one of the below
	outcomeOverflow         // a circuit breaker refused it without waiting: ours or orders'
	outcomeTimeout          // the time budget ran out: 504, or the route timeout
	outcomeError            // any other transport error
)

// sample is one request of the load.
type sample struct {
	step     int // -1 while warming up
	measured bool
	tester   bool
	latency  time.Duration
	outcome  outcome
	status   int
	version  string // v1 or v2, from the answer
	tries    int    // times an orders replica saw the request
	// refusal is how long a replica took to pass on the inventory
	// breaker's refusal, 0 if none did.
	refusal time.Duration
}

// phase is what the load is told about the story's current step.
type phase struct {
	step     int
	measured bool
	testers  bool // a share of requests carries x-tester: true
}

// testerShare is the share of requests sent by testers while they test.
const testerShare = 5 // one request in five

// load sends GET http://orders:8080/orders/42 at a fixed rate, whatever
// the answers take: an open loop, as real users arrive, so that a slow
// dependency shows up as requests piling up unless the mesh sheds them.
type load struct {
	shop   *shop
	client *http.Client
	rate   int
	// maxInFlight bounds the goroutines the loop starts; ticks beyond it
	// are counted as skipped rather than queued.
	maxInFlight int64

	phase       atomic.Pointer[phase]
	inFlight    atomic.Int64
	maxSeen     atomic.Int64 // most requests in flight, reset per step
	skipped     atomic.Int64
	seq         atomic.Int64
	mu          sync.Mutex
	second      []sample         // since the last live line
	steps       map[int][]sample // measured samples by step
	stepMaxSeen map[int]int64
}

func newLoad(s *shop, rate int) *load {
	l := &load{shop: s, client: s.frontend.HTTPClient(), rate: rate, maxInFlight: 512,
		steps: map[int][]sample{}, stepMaxSeen: map[int]int64{}}
	l.phase.Store(&phase{step: -1})
	return l
}

// run sends requests until ctx ends, then waits for those in flight.
func (l *load) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(time.Second / time.Duration(l.rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if l.inFlight.Load() >= l.maxInFlight {
			l.skipped.Add(1)
			continue
		}
		n := l.inFlight.Add(1)
		for {
			m := l.maxSeen.Load()
			if n <= m || l.maxSeen.CompareAndSwap(m, n) {
				break
			}
		}
		ph := l.phase.Load()
		id := l.seq.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer l.inFlight.Add(-1)
			l.one(ctx, ph, id)
		}()
	}
}

// setPhase starts a new step (or its measured part).
func (l *load) setPhase(p phase) {
	l.mu.Lock()
	if old := l.phase.Load(); old.step != p.step {
		l.maxSeen.Store(l.inFlight.Load())
	}
	l.mu.Unlock()
	l.phase.Store(&p)
}

// endStep records the most requests seen in flight during step.
func (l *load) endStep(step int) {
	l.mu.Lock()
	l.stepMaxSeen[step] = l.maxSeen.Load()
	l.mu.Unlock()
}

func (l *load) one(ctx context.Context, ph *phase, id int64) {
	// The caller's own bound is far above the route timeout: when a
	// request ends sooner, the mesh ended it.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://orders:8080/orders/42", nil)
	if err != nil {
		return
	}
	rid := "q-" + strconv.FormatInt(id, 10)
	req.Header.Set(requestIDHeader, rid)
	s := sample{step: ph.step, measured: ph.measured}
	if ph.testers && id%testerShare == 0 {
		s.tester = true
		req.Header.Set(testerHeader, "true")
	}
	start := time.Now()
	resp, err := l.client.Do(req)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		s.status = resp.StatusCode
		if err == nil {
			switch {
			case resp.StatusCode == http.StatusOK:
				s.outcome = outcomeOK
				s.version, _, _ = strings.Cut(string(body), " ")
			case resp.Header.Get(resilience.ReasonHeader) == resilience.ReasonOverflow:
				s.outcome = outcomeOverflow
			case resp.StatusCode == http.StatusGatewayTimeout:
				s.outcome = outcomeTimeout
			default:
				s.outcome = outcomeStatus
			}
		}
	}
	s.latency = time.Since(start)
	if err != nil {
		switch {
		case ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled):
			return // the story is over; this request measures nothing
		case errors.Is(err, resilience.ErrOverflow):
			s.outcome = outcomeOverflow
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
			s.outcome = outcomeTimeout
		default:
			s.outcome = outcomeError
		}

	}
	a := l.shop.attempts.get(rid)
	s.tries, s.refusal = a.tries, a.refusal
	l.mu.Lock()
	l.second = append(l.second, s)
	if s.measured {
		l.steps[s.step] = append(l.steps[s.step], s)
	}
	l.mu.Unlock()
}

// takeSecond returns the samples since the last call.
func (l *load) takeSecond() []sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.second
	l.second = nil
	return out
}

// stepSamples returns the measured samples of a step.
func (l *load) stepSamples(step int) ([]sample, int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.steps[step]), l.stepMaxSeen[step]
}

// stats are figures over a set of samples.
type stats struct {
	Requests, OK       int
	V1, V2             int // answers by version, testers excluded
	Testers, TestersV2 int
	Retries            int
	Overflow, Timeout  int
	Other              int // other statuses and errors
	P50, P99           time.Duration
	// OverflowP99 is the fast failures' latency as the caller saw it. On a
	// loaded machine it includes time in queues (scheduling, sockets) and,
	// with retries, an earlier attempt that waited.
	OverflowP99 time.Duration
	// RefusalP99 is how long the orders replicas took to pass on the
	// inventory breaker's refusals, from a request's arrival: the breaker's
	// own cost, which a breaker that queued would show.
	RefusalP99 time.Duration
	TimeoutP50 time.Duration
}

func summarize(ss []sample) stats {
	var st stats
	var lat, over, refusal, tout []time.Duration
	for _, s := range ss {
		st.Requests++
		lat = append(lat, s.latency)
		if s.tries > 1 {
			st.Retries += s.tries - 1
		}
		switch s.outcome {
		case outcomeOK:
			st.OK++
			switch {
			case s.tester:
				st.Testers++
				if s.version == "v2" {
					st.TestersV2++
				}
			case s.version == "v1":
				st.V1++
			case s.version == "v2":
				st.V2++
			}
		case outcomeOverflow:
			st.Overflow++
			over = append(over, s.latency)
			if s.refusal > 0 {
				refusal = append(refusal, s.refusal)
			}
		case outcomeTimeout:
			st.Timeout++
			tout = append(tout, s.latency)
		default:
			st.Other++
		}
	}
	st.P50, st.P99 = quantile(lat, 0.50), quantile(lat, 0.99)
	st.OverflowP99 = quantile(over, 0.99)
	st.RefusalP99 = quantile(refusal, 0.99)
	st.TimeoutP50 = quantile(tout, 0.50)
	return st
}

// quantile returns the q-quantile of ds (nearest rank); it sorts ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.5) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// pct is 100*a/b, 0 when b is 0.
func pct(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}
