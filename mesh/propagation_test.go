package mesh_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/xds/xdstest"
	"github.com/weftmesh/weft/mesh"
)

// The trace context and baggage of a request's context reach every place
// the request goes, written once on the copy the mesh sends: a static
// service, an xDS route, a mirror's copy and a host outside the mesh;
// with tracing on (the client span's context goes out) and off (the
// caller's context is passed on). The caller's header is never modified.
func TestTraceContextReachesEveryDestination(t *testing.T) {
	main, shadow := startRecBackend(t, nil), startRecBackend(t, nil)
	var outside struct {
		sync.Mutex
		h http.Header
	}
	external := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		outside.Lock()
		outside.h = r.Header.Clone()
		outside.Unlock()
		io.WriteString(w, "main") // as the backends answer
	}))
	defer external.Close()
	cp := xdstest.NewServer(t)
	cp.SetSnapshot(t, xdsNode, "1", mirrorResources(main.addr, shadow.addr)...)

	parent := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, Remote: true})
	member, _ := baggage.NewMember("tenant", "acme")
	bag, _ := baggage.New(member)
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())

	for _, tracing := range []bool{false, true} {
		var opts []mesh.Option
		name := "tracing off"
		if tracing {
			opts, name = append(opts, mesh.WithTracerProvider(tp)), "tracing on"
		}
		// With a bootstrap every host may be an xDS listener; the host
		// outside the mesh is called from a mesh without one.
		withXDS := newMesh(t, append(opts, mesh.WithBootstrap(cp.Bootstrap(xdsNode)))...)
		static := newMesh(t, append(opts, mesh.WithEndpoints("orders", main.addr))...)
		t.Run(name, func(t *testing.T) {
			for _, dest := range []struct {
				name, url string
				m         *mesh.Mesh
				seen      func() http.Header
			}{
				{"static service", "http://orders/items", static, func() http.Header { return lastHeader(main) }},
				{"xDS route", "http://" + parityHost + "/items", withXDS, func() http.Header { return lastHeader(main) }},
				{"mirror copy", "http://" + parityHost + "/items", withXDS, func() http.Header {
					var h http.Header
					waitUntil(t, "the mirror's copy", func() bool { h = lastHeader(shadow); return h != nil })
					return h
				}},
				{"host outside the mesh", external.URL + "/items", static, func() http.Header {
					outside.Lock()
					defer outside.Unlock()
					return outside.h
				}},
			} {
				t.Run(dest.name, func(t *testing.T) {
					main.reset()
					shadow.reset()
					ctx := baggage.ContextWithBaggage(trace.ContextWithRemoteSpanContext(context.Background(), parent), bag)
					ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					defer cancel()
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, dest.url, nil)
					req.Header.Set("X-Caller", "kept")
					resp, err := dest.m.HTTPClient().Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if len(req.Header) != 1 {
						t.Errorf("the caller's header was modified: %v", req.Header)
					}
					h := dest.seen()
					if h == nil {
						t.Fatal("the request did not arrive")
					}
					tp := h.Get("Traceparent")
					if !strings.Contains(tp, parent.TraceID().String()) {
						t.Errorf("traceparent = %q, want trace %s", tp, parent.TraceID())
					}
					if got := h.Get("Baggage"); got != "tenant=acme" {
						t.Errorf("baggage = %q, want tenant=acme", got)
					}
					if h.Get("X-Caller") != "kept" {
						t.Errorf("the caller's own header was lost: %v", h)
					}
				})
			}
		})
	}
}

// lastHeader is the header of b's latest arrival, nil before any.
func lastHeader(b *recBackend) http.Header {
	as := b.seen()
	if len(as) == 0 {
		return nil
	}
	return as[len(as)-1].header
}
