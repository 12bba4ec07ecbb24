package mesh

import (
	"context"
	"net/http"
	"sync"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/orca"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/orcaload"
)

// Backend metrics (ORCA, gRFC A51): what a server reports about its own
// load, per call and out of band, for clients balancing with gRFC A58's
// client_side_weighted_round_robin.

// WithBackendMetrics turns on ORCA backend-metric reporting on the mesh's
// servers. Handlers record a call's metrics with
// CallMetricsRecorderFromContext; a gRPC server sends them in the
// endpoint-load-metrics-bin trailer (grpc-go's orca.CallMetricsServerOption)
// and an HTTP handler (Handler, Serve, ListenAndServe) in Envoy's
// endpoint-load-metrics response header, in its TEXT form.
//
// server, when not nil, holds the server's own figures (typically from
// orca.NewServerMetricsRecorder, updated by the application as its load
// changes): they go into every per-call report, overridden by what the
// call records, and every gRPC server the mesh makes also serves them out
// of band on the OpenRcaService (grpc-go's orca.Register), at intervals
// no shorter than grpc-go's minimum of 30s. HTTP has no out-of-band form.
func WithBackendMetrics(server orca.ServerMetricsRecorder) Option {
	return optionFunc(func(c *config) error {
		c.orca = &orcaConfig{server: server}
		return nil
	})
}

// orcaConfig is WithBackendMetrics's setting; server may be nil.
type orcaConfig struct{ server orca.ServerMetricsRecorder }

// CallMetricsRecorderFromContext returns the recorder of the call whose
// context ctx is, in a handler of a gRPC server or an HTTP handler the
// mesh serves, when WithBackendMetrics is on; nil otherwise. A call whose
// handler never asks for its recorder sends no report. An HTTP handler
// must record before it writes the response's header or body: the report
// is a header.
func CallMetricsRecorderFromContext(ctx context.Context) orca.CallMetricsRecorder {
	if h, ok := ctx.Value(httpCallMetricsKey{}).(*httpCallMetrics); ok {
		return h.recorder()
	}
	return orca.CallMetricsRecorderFromContext(ctx)
}

// grpcServerORCA returns the server option of per-call reports.
func (m *Mesh) grpcServerORCA() []grpc.ServerOption {
	if m.cfg.orca == nil {
		return nil
	}
	if s := m.cfg.orca.server; s != nil {
		return []grpc.ServerOption{orca.CallMetricsServerOption(s)}
	}
	return []grpc.ServerOption{orca.CallMetricsServerOption(nil)}
}

// registerORCAService registers the OpenRcaService on srv when
// WithBackendMetrics has server figures to stream.
func (m *Mesh) registerORCAService(srv grpc.ServiceRegistrar) error {
	if m.cfg.orca == nil || m.cfg.orca.server == nil {
		return nil
	}
	return orca.Register(srv, orca.ServiceOptions{ServerMetricsProvider: m.cfg.orca.server})
}

type httpCallMetricsKey struct{}

// httpCallMetrics is one HTTP request's recorder, made when the handler
// first asks for it, as grpc-go makes a call's.
type httpCallMetrics struct {
	once sync.Once
	r    orca.CallMetricsRecorder
}

func (h *httpCallMetrics) recorder() orca.CallMetricsRecorder {
	h.once.Do(func() {
		// grpc-go's recorder implements the per-call methods too.
		h.r, _ = orca.NewServerMetricsRecorder().(orca.CallMetricsRecorder)
	})
	return h.r
}

// backendMetrics is the inbound HTTP middleware of per-call reports: it
// sits next to the handler, so every other layer's response passes
// through untouched.
func (m *Mesh) backendMetrics(next http.Handler) http.Handler {
	if m.cfg.orca == nil {
		return next
	}
	server := m.cfg.orca.server
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cm := &httpCallMetrics{}
		ow := &orcaWriter{ResponseWriter: w, cm: cm, server: server}
		next.ServeHTTP(ow, r.WithContext(context.WithValue(r.Context(), httpCallMetricsKey{}, cm)))
		ow.setHeader() // a handler that wrote nothing: net/http writes the header after
	})
}

// orcaWriter adds the report to the response header as it is written.
type orcaWriter struct {
	http.ResponseWriter
	cm     *httpCallMetrics
	server orca.ServerMetricsRecorder
	done   bool
}

func (w *orcaWriter) setHeader() {
	if w.done {
		return
	}
	w.done = true
	if w.cm.r == nil {
		return // the handler recorded nothing
	}
	if v := orcaHeader(w.server, w.cm.r); v != "" {
		w.Header().Set(orcaload.Header, v)
	}
}

func (w *orcaWriter) WriteHeader(code int) {
	if code >= 200 {
		w.setHeader()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *orcaWriter) Write(b []byte) (int, error) {
	w.setHeader()
	return w.ResponseWriter.Write(b)
}

func (w *orcaWriter) Flush() {
	w.setHeader()
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *orcaWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// orcaHeader is the endpoint-load-metrics value of a call's figures over
// the server's, in Envoy's TEXT form.
func orcaHeader(server orca.ServerMetricsProvider, call orca.ServerMetricsProvider) string {
	r := &v3orcapb.OrcaLoadReport{}
	if server != nil {
		applyServerMetrics(r, server.ServerMetrics())
	}
	applyServerMetrics(r, call.ServerMetrics())
	return orcaload.FormatText(r)
}

// applyServerMetrics writes the set figures of sm over r; grpc-go marks
// an unset figure -1.
func applyServerMetrics(r *v3orcapb.OrcaLoadReport, sm *orca.ServerMetrics) {
	if sm == nil {
		return
	}
	for _, f := range []struct {
		v  float64
		to *float64
	}{
		{sm.CPUUtilization, &r.CpuUtilization}, {sm.MemUtilization, &r.MemUtilization},
		{sm.AppUtilization, &r.ApplicationUtilization}, {sm.QPS, &r.RpsFractional}, {sm.EPS, &r.Eps},
	} {
		if f.v != -1 {
			*f.to = f.v
		}
	}
	merge := func(dst *map[string]float64, src map[string]float64) {
		for k, v := range src {
			if *dst == nil {
				*dst = map[string]float64{}
			}
			(*dst)[k] = v
		}
	}
	merge(&r.Utilization, sm.Utilization)
	merge(&r.RequestCost, sm.RequestCost)
	merge(&r.NamedMetrics, sm.NamedMetrics)
}

// loadReport reads the backend's report from a response's header, nil
// when it sent none or one that does not parse (which costs the request
// nothing: the balancer keeps the weight it had).
func loadReport(h http.Header) *balancer.LoadReport {
	if v := h[orcaload.Header]; len(v) > 0 {
		if r, err := balancer.ParseLoadMetricsHeader(v[0]); err == nil {
			return r
		}
		return nil
	}
	if v := h[orcaload.BinHeader]; len(v) > 0 {
		if r, err := balancer.ParseLoadMetricsHeader("BIN " + v[0]); err == nil {
			return r
		}
	}
	return nil
}
