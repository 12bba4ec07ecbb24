package resilience_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/weftmesh/weft/resilience"
)

// markingTransport records, per attempt, whether its context is a
// retry's; the third attempt succeeds.
type markingTransport struct{ seen []bool }

func (m *markingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	m.seen = append(m.seen, resilience.IsRetry(req.Context()))
	code := http.StatusServiceUnavailable
	if len(m.seen) == 3 {
		code = http.StatusOK
	}
	return &http.Response{StatusCode: code, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: req}, nil
}

// A transport beneath the retry middleware tells a retry from a first
// attempt by its context, not by counting: hedged attempts begin
// together, so a count cannot say which attempt is a retry.
func TestRetryAttemptsAreMarked(t *testing.T) {
	mt := &markingTransport{}
	var s sleeps
	rt := resilience.NewRetryTransport(mt, resilience.RetryPolicy{NumRetries: 2}, resilience.WithTestClock(nil, s.sleep, nil))
	req, _ := http.NewRequest(http.MethodGet, "http://orders/items", nil)
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if want := []bool{false, true, true}; len(mt.seen) != 3 || mt.seen[0] != want[0] || mt.seen[1] != want[1] || mt.seen[2] != want[2] {
		t.Errorf("IsRetry by attempt = %v, want %v", mt.seen, want)
	}
	if resilience.IsRetry(req.Context()) {
		t.Error("the caller's context is marked as a retry")
	}
}
