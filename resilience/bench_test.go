package resilience_test

import (
	"net/http"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resilience"
)

// cannedTransport answers without networking, so a benchmark measures the
// middleware alone. Each call returns a fresh Response (one allocation,
// the same with and without middleware) because middleware may wrap its
// body.
type cannedTransport struct{ resp http.Response }

func (c *cannedTransport) RoundTrip(*http.Request) (*http.Response, error) {
	r := c.resp
	return &r, nil
}

// cannedEndpoints is cannedTransport as an endpoint-picking transport,
// the kind the mesh puts beneath the retry middleware.
type cannedEndpoints struct{ cannedTransport }

func (c *cannedEndpoints) RoundTripAttempt(req *http.Request, a *resilience.Attempts) (*http.Response, string, error) {
	a.Record("10.0.0.1:8080")
	resp, err := c.RoundTrip(req)
	return resp, "10.0.0.1:8080", err
}

func BenchmarkRetryTransportNoRetry(b *testing.B) {
	canned := &cannedTransport{resp: http.Response{StatusCode: 200, Body: http.NoBody, Header: http.Header{}}}
	picker := &cannedEndpoints{*canned}
	cases := []struct {
		name   string
		rt     http.RoundTripper
		method string
	}{
		{"bare", canned, "GET"},
		{"retry/default", resilience.NewRetryTransport(canned, resilience.RetryPolicy{}), "GET"},
		{"retry/no-route-timeout", resilience.NewRetryTransport(canned, resilience.RetryPolicy{Timeout: -1}), "GET"},
		{"retry/not-retriable", resilience.NewRetryTransport(canned, resilience.RetryPolicy{Timeout: -1}), "POST"},
		{"retry/disabled", resilience.NewRetryTransport(canned, resilience.RetryPolicy{NumRetries: -1, Timeout: -1}), "GET"},
		{"retry/budget", resilience.NewRetryTransport(canned, resilience.RetryPolicy{Timeout: -1}, resilience.WithBudget(resilience.NewConcurrencyBudget(0, 0))), "GET"},
		{"endpoints/bare", picker, "GET"},
		{"endpoints/retry/no-route-timeout", resilience.NewRetryTransport(picker, resilience.RetryPolicy{Timeout: -1}), "GET"},
		{"endpoints/retry/budget", resilience.NewRetryTransport(picker, resilience.RetryPolicy{Timeout: -1}, resilience.WithBudget(resilience.NewConcurrencyBudget(0, 0))), "GET"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			req, _ := http.NewRequest(c.method, "http://orders/", nil)
			b.ReportAllocs()
			for b.Loop() {
				resp, err := c.rt.RoundTrip(req)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
			}
		})
	}
}

func BenchmarkBreakerAllowDone(b *testing.B) {
	br := resilience.NewBreaker(resilience.BreakerSettings{})
	b.ReportAllocs()
	for b.Loop() {
		done, err := br.Allow()
		if err != nil {
			b.Fatal(err)
		}
		done(balancer.Success)
	}
}

func BenchmarkBreakerAllowDoneParallel(b *testing.B) {
	br := resilience.NewBreaker(resilience.BreakerSettings{})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			done, err := br.Allow()
			if err != nil {
				b.Error(err)
				return
			}
			done(balancer.Success)
		}
	})
}

// BenchmarkRateBudgetRequestStarted is what every request to a cluster
// with the default retry budget pays, from as many goroutines as there
// are cores: one budget is shared by all of a cluster's requests.
func BenchmarkRateBudgetRequestStarted(b *testing.B) {
	budget := resilience.NewRateBudget(0, 0, 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			budget.RequestStarted()
		}
	})
}
