package balancer

import (
	"fmt"
	"sync"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"

	"github.com/weftmesh/weft/internal/orcaload"
)

// grpc-go's orca package, imported by the gRPC adapter for out-of-band
// reports, also registers the parser of the endpoint-load-metrics-bin
// trailer, which is what fills grpc-go's DoneInfo.ServerLoad.

// LoadReport is a backend's report of its own load, in the terms of ORCA
// (Open Request Cost Aggregation, gRFC A51): what a gRPC server sends in
// its endpoint-load-metrics-bin trailer or on an OpenRcaService stream,
// and an HTTP server in Envoy's endpoint-load-metrics response header.
// Utilizations are fractions of capacity (CPU may exceed 1 on a host
// whose limit is soft); QPS and EPS are the backend's own rates of
// requests and errors per second.
type LoadReport struct {
	CPUUtilization         float64
	MemUtilization         float64
	ApplicationUtilization float64
	QPS                    float64
	EPS                    float64
	// Utilization, RequestCost and NamedMetrics are the report's maps,
	// nil when empty. They are not to be modified.
	Utilization  map[string]float64
	RequestCost  map[string]float64
	NamedMetrics map[string]float64
}

// LoadMetricsHeader is the HTTP response header, Envoy's, in which a
// backend reports its load per request.
const LoadMetricsHeader = orcaload.Header

// ParseLoadMetricsHeader reads the value of an endpoint-load-metrics
// header in any of Envoy's forms: "TEXT name=value,...", "JSON {...}"
// (protobuf's JSON of xds.data.orca.v3.OrcaLoadReport) or "BIN <base64>".
func ParseLoadMetricsHeader(v string) (*LoadReport, error) {
	r, err := orcaload.Parse(v)
	if err != nil {
		return nil, fmt.Errorf("balancer: %s: %w", LoadMetricsHeader, err)
	}
	return loadFromProto(r), nil
}

func loadFromProto(r *v3orcapb.OrcaLoadReport) *LoadReport {
	l := &LoadReport{
		CPUUtilization:         r.GetCpuUtilization(),
		MemUtilization:         r.GetMemUtilization(),
		ApplicationUtilization: r.GetApplicationUtilization(),
		QPS:                    r.GetRpsFractional(),
		EPS:                    r.GetEps(),
	}
	if len(r.GetUtilization()) > 0 {
		l.Utilization = r.GetUtilization()
	}
	if len(r.GetRequestCost()) > 0 {
		l.RequestCost = r.GetRequestCost()
	}
	if len(r.GetNamedMetrics()) > 0 {
		l.NamedMetrics = r.GetNamedMetrics()
	}
	return l
}

// ReportLoad records a load report the endpoint's backend sent outside
// any request of this data path (an out-of-band ORCA stream), as a
// request's DoneInfo.Load is recorded. It is safe for concurrent use.
func (e *Endpoint) ReportLoad(r *LoadReport) { e.load.orca.record(r, monoNow()) }

// orcaState is the last usable load report of one address, as gRFC A58
// keeps it: the figures its weight is made of, when it last came, and
// since when reports have been coming without a gap longer than the
// weight expiration period.
type orcaState struct {
	mu            sync.Mutex
	qps, util     float64
	eps           float64
	nonEmptySince int64 // monoNow; 0: none since the last expiration
	lastUpdated   int64 // monoNow; 0: never
}

// record keeps r's figures when it is usable: gRFC A58 ignores a report
// without both a utilization (application_utilization, else
// cpu_utilization) and a request rate.
func (s *orcaState) record(r *LoadReport, now int64) {
	util := r.ApplicationUtilization
	if util <= 0 {
		util = r.CPUUtilization
	}
	if util <= 0 || r.QPS <= 0 {
		return
	}
	if now == 0 {
		now = 1 // 0 means never
	}
	s.mu.Lock()
	s.qps, s.util, s.eps = r.QPS, util, r.EPS
	s.lastUpdated = now
	if s.nonEmptySince == 0 {
		s.nonEmptySince = now
	}
	s.mu.Unlock()
}

// weight returns the address's weight at now under gRFC A58:
// qps / (utilization + eps/qps × penalty), or 0 when it has no report
// yet, its last report is older than expiration (the blackout then
// starts again with the next one), or its reports began less than
// blackout ago.
func (s *orcaState) weight(now int64, blackout, expiration int64, penalty float64) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastUpdated == 0 {
		return 0
	}
	if now-s.lastUpdated >= expiration {
		s.nonEmptySince = 0
		return 0
	}
	if blackout > 0 && (s.nonEmptySince == 0 || now-s.nonEmptySince < blackout) {
		return 0
	}
	return s.qps / (s.util + s.eps/s.qps*penalty)
}
