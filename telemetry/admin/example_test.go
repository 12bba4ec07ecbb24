package admin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/weftmesh/weft/telemetry/admin"
)

// source is a fixed Source, as a test or a tool would write one.
type source struct{}

func (source) Status(time.Time) admin.Status {
	return admin.Status{Service: "checkout", MTLS: "strict", LBPolicy: "round_robin"}
}
func (source) Ready(time.Time) (string, error)     { return "", nil }
func (source) Requests() map[string]uint64         { return map[string]uint64{"orders": 3} }
func (source) Clusters() []admin.Cluster           { return nil }
func (source) Routes() []admin.HostRoutes          { return nil }
func (source) Resources(bool) []admin.Resource     { return nil }
func (source) ConfigDump() ([]byte, error)         { return nil, nil }
func (source) Inbound() admin.Inbound              { return admin.Inbound{MTLS: "strict"} }
func (source) Golden(time.Time) []admin.GoldenStat { return nil }

func Example() {
	srv, err := admin.New("127.0.0.1:0", source{})
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	// A mounted endpoint is behind the same Host check as the rest.
	srv.Handle("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "hello")
	}))

	for _, host := range []string{"localhost", "evil.example"} {
		r := httptest.NewRequest("GET", "http://"+host+"/hello", nil)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		fmt.Println(host, w.Code)
	}
	// Output:
	// localhost 200
	// evil.example 421
}

func ExampleGolden() {
	g := admin.NewGolden(0)
	now := time.Unix(1_700_000_000, 0)
	k := admin.GoldenKey{Direction: admin.DirectionInbound, Route: "/orders.Orders/Get", Caller: "spiffe://example.org/frontend"}
	for i := range 100 {
		g.Observe(k, i%10 != 0, time.Duration(i+1)*time.Millisecond, now)
	}
	st := g.Snapshot(now)[0]
	fmt.Printf("%s %s from %s: %d requests, success %.0f%%, p50 %.0f ms\n",
		st.Direction, st.Route, st.Caller, st.Requests, *st.SuccessRate*100, *st.P50Ms)
	// Output:
	// inbound /orders.Orders/Get from spiffe://example.org/frontend: 100 requests, success 90%, p50 51 ms
}
