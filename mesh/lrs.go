package mesh

import (
	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resolver"
)

// lrsLoad counts an xDS cluster's requests, on both protocols, for the
// LRS stream the xDS client keeps while some cluster's lrs_server is set
// (self, the only source grpc-go supports). Each attempt counts once, at
// the locality of the endpoint picked for it: in progress from the pick
// until its outcome, then a success or an error. An HTTP attempt is an
// error when it fails without a response or the response is a 5xx, as
// Envoy's router counts an upstream host's rq_error (a reset, or a 5xx
// from the upstream); a gRPC attempt is an error when it ends with a
// status other than OK, as grpc-go counts it.
type lrsLoad struct{ cl *xds.ClusterLoad }

var _ balancer.LoadReporter = (*lrsLoad)(nil)

// Locality implements balancer.LoadReporter without allocating.
func (l *lrsLoad) Locality(loc resolver.Locality) balancer.LocalityLoad { return l.cl.Locality(loc) }

// applyLoadLocked starts, moves or stops the cluster's load reporting as
// its lrs_server and eds_service_name say. The counters of a reporting
// cluster live on in the xDS client while another reference holds them.
func (w *clusterWatcher) applyLoadLocked(c *xds.Cluster) {
	key := ""
	if c.ReportLoad {
		key = "+" + c.LoadService
	}
	if key == w.loadKey {
		return
	}
	s := w.s
	w.loadKey = key
	old := w.stopLRS
	w.stopLRS = nil
	var ld *lrsLoad
	if key != "" {
		// Started before the old one stops, so that a changed service
		// name does not close and reopen the stream.
		cl, stop := w.x.client.ReportLoad(s.name, c.LoadService)
		ld, w.stopLRS = &lrsLoad{cl: cl}, stop
	}
	s.load.Store(ld)
	// gRPC channels rebuild the cluster's balancer with the new counters.
	p := *s.policy.Load()
	p.gen = s.gen.Add(1)
	p.load = nil
	if ld != nil {
		p.load = ld
	}
	s.policy.Store(&p)
	if old != nil {
		old()
	}
}

// stopLoad ends the cluster's load reporting, when the cluster is dropped.
func (w *clusterWatcher) stopLoad() {
	w.mu.Lock()
	stop := w.stopLRS
	w.stopLRS, w.loadKey = nil, ""
	w.s.load.Store(nil)
	w.mu.Unlock()
	if stop != nil {
		stop()
	}
}
