package resilience_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/resilience"
)

func TestHedgeTransport(t *testing.T) {
	firstCancelled := make(chan struct{})
	be := newBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if n == 1 {
			select { // the slow attempt: it must be cancelled (bounded)
			case <-r.Context().Done():
				close(firstCancelled)
			case <-time.After(10 * time.Second):
			}
			return
		}
		io.WriteString(w, "hedged:"+string(body))
	})
	rt := resilience.NewHedgeTransport(newTransport(t), resilience.HedgePolicy{Delay: 20 * time.Millisecond})
	req, _ := http.NewRequest("PUT", be.URL, &opaqueReader{strings.NewReader("payload")})
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hedged:payload" {
		t.Errorf("body: got %q, want %q", body, "hedged:payload")
	}
	select {
	case <-firstCancelled:
	case <-time.After(10 * time.Second):
		t.Error("the losing attempt was not cancelled")
	}
	if got := be.hits.Load(); got != 2 {
		t.Errorf("backend hits: got %d, want 2", got)
	}
}

func TestHedgeTransportLimits(t *testing.T) {
	tests := []struct {
		name     string
		method   string
		policy   resilience.HedgePolicy
		wantHits int64
	}{
		{"non-idempotent is sent once", "POST", resilience.HedgePolicy{Delay: time.Millisecond}, 1},
		{"at most MaxAttempts in flight", "GET", resilience.HedgePolicy{Delay: time.Millisecond, MaxAttempts: 3}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			be := newBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				select {
				case <-release:
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			})
			rt := resilience.NewHedgeTransport(newTransport(t), tt.policy)
			errc := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(context.Background(), tt.method, be.URL, nil)
				resp, err := rt.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
				}
				errc <- err
			}()
			// Give the hedges time to go out (bounded), then let them answer.
			for i := 0; i < 200 && be.hits.Load() < tt.wantHits; i++ {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // 50 more delays: any extra attempt would be out
			close(release)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if got := be.hits.Load(); got != tt.wantHits {
				t.Errorf("backend hits: got %d, want %d", got, tt.wantHits)
			}
		})
	}
}
