package resilience_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/resilience"
)

// A backend that fails its first request with 503 answers the retry.
func ExampleNewRetryTransport() {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()

	client := &http.Client{Transport: resilience.NewRetryTransport(base, resilience.RetryPolicy{
		RetryOn:    resilience.RetryGatewayError | resilience.RetryConnectFailure | resilience.RetryReset,
		NumRetries: 2,
	})}
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body), "after", hits.Load(), "attempts")
	// Output: 200 hello after 2 attempts
}

// An Envoy retry_on value from route configuration.
func ExampleParseRetryOn() {
	on, err := resilience.ParseRetryOn("5xx,reset,retriable-status-codes")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(on&resilience.RetryReset != 0, on)
	_, err = resilience.ParseRetryOn("envoy-ratelimited")
	fmt.Println(err)
	// Output:
	// true 5xx,reset,retriable-status-codes
	// resilience: unknown retry_on condition "envoy-ratelimited"
}

// The two-step Allow fits a call whose outcome is known only at the end.
func ExampleBreaker_Allow() {
	br := resilience.NewBreaker(resilience.BreakerSettings{ConsecutiveFailures: 2, OpenTimeout: time.Minute})
	for i := range 3 {
		done, err := br.Allow()
		if err != nil {
			fmt.Println(i, err, errors.Is(err, resilience.ErrCircuitOpen))
			continue
		}
		done(balancer.GatewayError) // say, a 503
		fmt.Println(i, "sent, breaker", br.State())
	}
	// Output:
	// 0 sent, breaker closed
	// 1 sent, breaker open
	// 2 resilience: circuit open true
}

// A server sheds what its token bucket does not allow.
func ExampleNewRateLimitHandler() {
	limiter := resilience.NewTokenBucket(0.001, 1) // one request, then about one every 17 minutes
	srv := httptest.NewServer(resilience.NewRateLimitHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), limiter))
	defer srv.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	client := &http.Client{Transport: base}
	for range 2 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Printf("%d %q\n", resp.StatusCode, resp.Header.Get(resilience.ReasonHeader))
	}
	// Output:
	// 200 ""
	// 429 "rate-limited"
}

// The transport beneath the retries (the mesh's balancer) steers each
// retry away from the endpoints already tried.
func ExampleAttemptsFromContext() {
	endpoints := []string{"10.0.0.1:8080", "10.0.0.2:8080"}
	balancerTransport := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		a := resilience.AttemptsFromContext(r.Context())
		pick := endpoints[0]
		if a.Tried(pick) {
			pick = endpoints[1]
		}
		a.Record(pick)
		fmt.Println("attempt", a.Count(), "->", pick)
		return &http.Response{StatusCode: http.StatusServiceUnavailable, Body: http.NoBody, Header: http.Header{}, Request: r}, nil
	})
	rt := resilience.NewRetryTransport(balancerTransport, resilience.RetryPolicy{BaseInterval: time.Millisecond})
	req, _ := http.NewRequest("GET", "http://orders/items", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println("final status", resp.StatusCode)
	// Output:
	// attempt 1 -> 10.0.0.1:8080
	// attempt 2 -> 10.0.0.2:8080
	// final status 503
}

// Refusals map to what a server should answer.
func ExampleHTTPStatus() {
	code, reason, _ := resilience.HTTPStatus(fmt.Errorf("calling orders: %w", resilience.ErrOverflow))
	fmt.Println(code, reason)
	// Output: 503 overflow
}
