package tap_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/tap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseFilter(t *testing.T) {
	for _, tc := range []struct {
		query   string
		want    tap.Filter
		wantErr string
	}{
		{query: "", want: tap.Filter{}},
		{query: "service=orders&path=/items&direction=inbound&protocol=grpc&sample=0.1",
			want: tap.Filter{Service: "orders", PathPrefix: "/items", Direction: "inbound", Protocol: "grpc", Sample: 0.1}},
		{query: "status=5xx", want: tap.Filter{Status: []tap.StatusMatch{{Class: 5}}}},
		{query: "status=503,2xx", want: tap.Filter{Status: []tap.StatusMatch{{Code: 503}, {Class: 2}}}},
		{query: "status=unavailable&status=DEADLINE_EXCEEDED&status=cancelled",
			want: tap.Filter{Status: []tap.StatusMatch{{GRPC: "Unavailable"}, {GRPC: "DeadlineExceeded"}, {GRPC: "Canceled"}}}},
		{query: "status=6xx", wantErr: `status="6xx"`},
		{query: "status=teapot", wantErr: `status="teapot"`},
		{query: "sample=0", wantErr: `sample="0"`},
		{query: "sample=1.5", wantErr: `sample="1.5"`},
		{query: "sample=x", wantErr: `sample="x"`},
		{query: "direction=sideways", wantErr: `direction="sideways"`},
		{query: "protocol=ftp", wantErr: `protocol="ftp"`},
		{query: "path=items", wantErr: `path="items"`},
		{query: "header=x", wantErr: `unknown parameter "header"`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tc.query)
			got, err := tap.ParseFilter(q)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ParseFilter(%q) error = %v, want one naming %s", tc.query, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseFilter(%q): %v", tc.query, err)
			}
			gj, _ := json.Marshal(got)
			wj, _ := json.Marshal(tc.want)
			if string(gj) != string(wj) {
				t.Errorf("ParseFilter(%q) = %s, want %s", tc.query, gj, wj)
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	out503 := &tap.Event{Direction: tap.Outbound, Protocol: tap.HTTP, Authority: "orders:8080", Cluster: "orders-v1", Path: "/items/1", Status: 503}
	in200 := &tap.Event{Direction: tap.Inbound, Protocol: tap.GRPC, Authority: "users", Path: "/pkg.Users/Get", Status: 200, GRPCStatus: "Unavailable"}
	for _, tc := range []struct {
		query  string
		event  *tap.Event
		admits bool
	}{
		{"", out503, true},
		{"service=orders", out503, true},
		{"service=orders:8080", out503, true},
		{"service=ORDERS", out503, true},
		{"service=orders-v1", out503, true},
		{"service=users", out503, false},
		{"path=/items", out503, true},
		{"path=/item", out503, true},
		{"path=/users", out503, false},
		{"status=5xx", out503, true},
		{"status=503", out503, true},
		{"status=502", out503, false},
		{"status=2xx,503", out503, true},
		{"status=4xx", out503, false},
		{"direction=outbound", out503, true},
		{"direction=inbound", out503, false},
		{"protocol=http", out503, true},
		{"protocol=grpc", out503, false},
		{"status=unavailable", in200, true},
		{"status=5xx", in200, false},
		{"status=2xx", in200, true},
		{"direction=inbound&protocol=grpc&path=/pkg.Users/", in200, true},
		{"direction=inbound&service=orders", in200, false},
	} {
		q, _ := url.ParseQuery(tc.query)
		f, err := tap.ParseFilter(q)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(tc.event); got != tc.admits {
			t.Errorf("filter %q on %+v: Match = %v, want %v", tc.query, *tc.event, got, tc.admits)
		}
	}
}

func TestSubscriberBound(t *testing.T) {
	b := tap.New(tap.WithMaxSubscribers(2))
	defer b.Close()
	if b.Active() {
		t.Fatal("Active with no subscriber")
	}
	s1, err := b.Subscribe(tap.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := b.Subscribe(tap.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(tap.Filter{}); !errors.Is(err, tap.ErrTooManySubscribers) {
		t.Fatalf("third Subscribe: err = %v, want ErrTooManySubscribers", err)
	}
	s1.Close()
	s1.Close() // idempotent
	s3, err := b.Subscribe(tap.Filter{})
	if err != nil {
		t.Fatalf("Subscribe after a Close: %v", err)
	}
	s2.Close()
	s3.Close()
	if b.Active() {
		t.Fatal("Active after every subscriber closed")
	}
}

// A subscriber that does not read loses events, counted, and Publish
// never waits for it; once it reads again it gets what comes next.
func TestSlowSubscriberDropsAndCounts(t *testing.T) {
	b := tap.New(tap.WithBuffer(4))
	defer b.Close()
	slow, _ := b.Subscribe(tap.Filter{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			b.Publish(&tap.Event{Status: i})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	if d := slow.TakeDropped(); d != 96 {
		t.Errorf("slow subscriber dropped %d, want 96 (100 events, buffer 4)", d)
	}
	if d := slow.TakeDropped(); d != 0 {
		t.Errorf("TakeDropped after a take = %d, want 0", d)
	}
	for i := 0; i < 4; i++ {
		if e := <-slow.Events(); e.Status != i {
			t.Errorf("buffered event %d has status %d, want the first events kept", i, e.Status)
		}
	}
	b.Publish(&tap.Event{Status: 1000})
	if e := <-slow.Events(); e.Status != 1000 {
		t.Errorf("after catching up: event %d, want 1000", e.Status)
	}
}

func TestSampling(t *testing.T) {
	b := tap.New(tap.WithBuffer(10_000))
	defer b.Close()
	s, _ := b.Subscribe(tap.Filter{Sample: 0.1})
	for i := 0; i < 10_000; i++ {
		b.Publish(&tap.Event{})
	}
	// 10,000 draws at 0.1: mean 1,000, standard deviation 30.
	if n := len(s.Events()); n < 800 || n > 1200 {
		t.Errorf("sample=0.1 kept %d of 10,000 events, want about 1,000", n)
	}
}

// The handler streams NDJSON lines as events come, filtered, and returns
// when the client goes away or when the bus closes.
func TestHandlerStreams(t *testing.T) {
	b := tap.New(tap.WithMaxSubscribers(1))
	srv := httptest.NewServer(tap.Handler(b))
	defer srv.Close()
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"?status=5xx", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// The bound: a second follower is refused with the reason.
	resp2, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp2.Body)
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "the most allowed") {
		t.Errorf("second subscriber: %d %q, want 429 with the reason", resp2.StatusCode, body)
	}
	// A bad filter is 400 naming it.
	resp3, err := srv.Client().Get(srv.URL + "?status=bad")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp3.Body)
	resp3.Body.Close()
	if resp3.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), `status="bad"`) {
		t.Errorf("bad filter: %d %q, want 400 naming status", resp3.StatusCode, body)
	}

	start := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	b.Publish(&tap.Event{Time: start, Direction: tap.Outbound, Protocol: tap.HTTP, Status: 200, Path: "/ok"})
	b.Publish(&tap.Event{Time: start, Direction: tap.Outbound, Protocol: tap.HTTP, Status: 503, Path: "/bad",
		Attempts: []tap.Attempt{{Endpoint: "127.0.0.1:1", Status: 503, Reason: tap.ReasonFirst}}})
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("no line: %v", sc.Err())
	}
	var got map[string]any
	if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
		t.Fatalf("line %q: %v", sc.Text(), err)
	}
	if got["path"] != "/bad" || got["status"] != float64(503) || got["time"] != "2026-01-02T03:04:05.000000006Z" {
		t.Errorf("line = %s, want the 503 alone, with its time in RFC 3339", sc.Text())
	}
	for _, k := range []string{"time", "direction", "protocol", "method", "authority", "path", "status", "grpc_status", "latency_ms",
		"peer", "route", "cluster", "endpoint", "attempts", "authz", "trace_id"} {
		if _, ok := got[k]; !ok {
			t.Errorf("line lacks %q: %s", k, sc.Text())
		}
	}
	// The bus closing ends the stream.
	b.Close()
	if sc.Scan() {
		t.Errorf("line after Close: %s", sc.Text())
	}
}

// A client that goes away ends its subscription.
func TestHandlerEndsWhenClientLeaves(t *testing.T) {
	b := tap.New()
	defer b.Close()
	srv := httptest.NewServer(tap.Handler(b))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL, nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if !b.Active() {
		t.Fatal("not Active with a client following")
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for b.Active() {
		if time.Now().After(deadline) {
			t.Fatal("subscriber still open 10s after its client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkActive is what the data path pays with tap off.
func BenchmarkActive(b *testing.B) {
	bus := tap.New()
	defer bus.Close()
	n := 0
	for b.Loop() {
		if bus.Active() {
			n++
		}
	}
	if n != 0 {
		b.Fatal("active")
	}
}

// BenchmarkPublish is the cost of one event to one subscriber whose
// buffer is full (the event is dropped): what a request pays, beyond
// building its event, with one tap open.
func BenchmarkPublish(b *testing.B) {
	bus := tap.New(tap.WithBuffer(1))
	defer bus.Close()
	s, _ := bus.Subscribe(tap.Filter{Service: "orders"})
	defer s.Close()
	e := &tap.Event{Authority: "orders:8080"}
	b.ReportAllocs()
	for b.Loop() {
		bus.Publish(e)
	}
}

// AppendJSON writes what encoding/json writes for an event.
func TestAppendJSONIsEncodingJSON(t *testing.T) {
	for _, e := range []tap.Event{
		{Attempts: []tap.Attempt{}},
		{
			Time: time.Date(2026, 12, 7, 1, 2, 3, 456789, time.FixedZone("x", 3600)), Direction: tap.Inbound, Protocol: tap.GRPC,
			Method: "/pkg.S/M", Authority: "orders:8080", Path: "/a\"b\\c\n\t<&>\u2028\x01é\xff", Status: 200, GRPCStatus: "PermissionDenied",
			LatencyMS: 12.3456, Peer: "spiffe://td/ns/a/sa/b", Route: `prefix "/"`, Cluster: "c", Endpoint: "127.0.0.1:1",
			Attempts: []tap.Attempt{{Endpoint: "a", Status: 503, Reason: "first", Error: "boom"}, {Endpoint: "b", Status: 200, GRPCStatus: "OK", Reason: "hedge"}},
			Authz:    &tap.Authz{Decision: "deny", Rule: "ns/deny"}, TraceID: "0123", Error: "x", Dropped: 7,
		},
	} {
		got := e.AppendJSON(nil)
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("AppendJSON:\n%s\nencoding/json:\n%s", got, want)
		}
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := tap.Event{Time: time.Now(), Direction: tap.Outbound, Protocol: tap.HTTP, Method: "GET", Authority: "orders:8080", Path: "/items/1",
		Status: 200, LatencyMS: 1.25, Route: "default", Cluster: "orders", Endpoint: "10.0.0.1:8080",
		Attempts: []tap.Attempt{{Endpoint: "10.0.0.1:8080", Status: 200, Reason: "first"}}}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendJSON(buf[:0])
	}
}

// duration= ends the stream once that long has passed, with a complete
// response, whatever the filter; a bad one is 400 naming it, before any
// subscription.
func TestHandlerDuration(t *testing.T) {
	b := tap.New(tap.WithMaxSubscribers(1))
	defer b.Close()
	srv := httptest.NewServer(tap.Handler(b))
	defer srv.Close()
	for _, tc := range []struct{ query, wantErr string }{
		{"duration=0", `duration="0"`},
		{"duration=-1s", `duration="-1s"`},
		{"duration=2h", `duration="2h"`},
		{"duration=1h0m1s", `duration="1h0m1s"`},
		{"duration=30", `duration="30"`},
		{"duration=soon", `duration="soon"`},
		{"duration=", `duration=""`},
		{"duration=1s&duration=2s", "duration given 2 times"},
		{"duration=1s&status=bad", `status="bad"`},
		{"duration=1s&header=x", `unknown parameter "header"`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + "?" + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), tc.wantErr) {
				t.Errorf("%s: %d %q, want 400 naming %s", tc.query, resp.StatusCode, body, tc.wantErr)
			}
			if b.Active() {
				t.Errorf("%s: subscribed although refused", tc.query)
			}
		})
	}

	for _, tc := range []struct {
		query     string
		d         time.Duration
		wantPaths []string // of the two events published, those the filter admits
	}{
		{"duration=1ms", time.Millisecond, nil},
		{"duration=2s", 2 * time.Second, []string{"/ok", "/bad"}},
		{"status=5xx&duration=%201s%20", time.Second, []string{"/bad"}},
		{"duration=1h", time.Hour, []string{"/ok"}}, // ended by the client leaving, not by the clock
	} {
		t.Run(tc.query, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"?"+tc.query, nil)
			start := time.Now()
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if tc.wantPaths != nil {
				b.Publish(&tap.Event{Direction: tap.Outbound, Protocol: tap.HTTP, Status: 200, Path: "/ok"})
				b.Publish(&tap.Event{Direction: tap.Outbound, Protocol: tap.HTTP, Status: 503, Path: "/bad"})
			}
			if tc.d == time.Hour {
				sc := bufio.NewScanner(resp.Body)
				if !sc.Scan() || !strings.Contains(sc.Text(), `"path":"/ok"`) {
					t.Fatalf("line %q (%v), want /ok", sc.Text(), sc.Err())
				}
				return
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("the stream did not end cleanly: %v", err)
			}
			if took := time.Since(start); took < tc.d {
				t.Errorf("the stream ended after %v, before the %v asked for", took, tc.d)
			}
			var paths []string
			for line := range strings.Lines(string(body)) {
				var e struct{ Path string }
				if err := json.Unmarshal([]byte(line), &e); err != nil {
					t.Fatalf("line %q: %v", line, err)
				}
				paths = append(paths, e.Path)
			}
			if !slices.Equal(paths, tc.wantPaths) {
				t.Errorf("lines for %q, want %q", paths, tc.wantPaths)
			}
			// The subscription ends with the stream.
			for deadline := time.Now().Add(10 * time.Second); b.Active(); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("subscriber still open 10s after its duration")
				}
			}
		})
	}
}
