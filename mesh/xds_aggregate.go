package mesh

import (
	"errors"
	"fmt"
	"sync"

	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resolver"
)

// Aggregate clusters (gRFC A37, Envoy's envoy.clusters.aggregate): the
// cluster's endpoints are its leaf clusters' endpoints, each leaf's
// priorities placed after those of the leaves before it, so the
// cluster's priority failover moves from one underlying cluster to the
// next. As in grpc-go, the aggregate cluster's own lb_policy balances the
// flattened priorities; outlier detection, thresholds, upstream TLS and
// the HTTP protocol, which Envoy applies per underlying cluster, are the
// first leaf's here for the whole cluster, and leaves that ask for
// different upstream TLS are refused rather than sent plaintext or the
// wrong identity. Leaves asking for different protocols are not refused,
// which would fail an aggregate cluster Envoy serves; they get the first's.

// followAggregate starts or updates the resolution of an aggregate
// cluster's graph.
func (w *clusterWatcher) followAggregate(c *xds.Cluster) {
	w.mu.Lock()
	if w.cancelEndpt != nil {
		w.cancelEndpt()
		w.cancelEndpt, w.endpoints = nil, ""
	}
	agg := w.agg
	if agg == nil {
		agg = xds.NewAggregate(w.x.client, &aggregateWatcher{w: w})
		w.agg = agg
		w.leaves = &aggregateLeaves{s: w.s, x: w.x, root: c.Name}
	}
	w.mu.Unlock()
	// Outside w.mu: the aggregate may call its watcher now.
	agg.Update(c)
}

// stopAggregateLocked stops following an aggregate cluster's leaves and
// returns the Aggregate for the caller to close once w.mu is released.
func (w *clusterWatcher) stopAggregateLocked() *xds.Aggregate {
	agg := w.agg
	w.agg = nil
	if w.leaves != nil {
		w.leaves.stop()
		w.leaves = nil
	}
	return agg
}

// aggregateWatcher receives an aggregate cluster's resolution.
type aggregateWatcher struct{ w *clusterWatcher }

func (aw *aggregateWatcher) OnLeaves(root *xds.Cluster, leaves []*xds.Cluster) {
	w := aw.w
	s := w.s
	defer s.subs.notify()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leaves == nil {
		return // stopped meanwhile
	}
	eff, err := aggregateEffective(root, leaves)
	if err != nil {
		w.failAggregateLocked(err)
		return
	}
	w.applyLocked(eff)
	w.leaves.follow(leaves)
}

func (aw *aggregateWatcher) OnError(err error) {
	w := aw.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.leaves == nil {
		return
	}
	w.failAggregateLocked(err)
}

// failAggregateLocked fails the calls to an aggregate cluster whose graph
// cannot be used, saying why.
func (w *clusterWatcher) failAggregateLocked(err error) {
	w.x.m.log.Warn("weft: aggregate cluster unusable", "cluster", w.s.name, "error", err)
	w.leaves.follow(nil)
	w.s.balancer().Update(nil)
	w.s.setErr(fmt.Errorf("cluster %q: %w", w.s.name, err))
	w.s.markReady()
}

// aggregateEffective is the cluster whose settings apply to an aggregate
// cluster's requests: its own balancer, and the first leaf's outlier
// detection, thresholds, upstream TLS and HTTP protocol.
func aggregateEffective(root *xds.Cluster, leaves []*xds.Cluster) (*xds.Cluster, error) {
	eff := *root
	first := leaves[0]
	eff.OutlierDetection, eff.CircuitBreaker, eff.TLS = first.OutlierDetection, first.CircuitBreaker, first.TLS
	eff.Protocol = first.Protocol
	for _, l := range leaves[1:] {
		if fmt.Sprint(l.TLS) != fmt.Sprint(first.TLS) {
			return nil, fmt.Errorf("aggregate cluster %q: underlying clusters %q and %q ask for different upstream TLS (transport_socket); Weft applies one to the whole aggregate cluster", root.Name, first.Name, l.Name)
		}
	}
	return &eff, nil
}

// aggregateLeaves holds the endpoints of an aggregate cluster's leaves
// and publishes them, flattened, to the cluster's balancer. Leaf watches
// report from the xDS client's serializer and from DNS goroutines; mu
// orders their merges.
type aggregateLeaves struct {
	s    *service
	x    *xdsPath
	root string

	mu      sync.Mutex
	list    []*leafWatch
	stopped bool
}

// leafWatch is one leaf cluster's endpoint watch and latest endpoints.
type leafWatch struct {
	name     string // the leaf cluster
	key      string // what is watched: the leaf and its EDS name, DNS name or inline endpoints
	cancel   func()
	reported bool // a first answer came
	eps      []resolver.Endpoint
	err      error
}

func leafKey(c *xds.Cluster) string {
	switch c.Kind {
	case xds.ClusterEDS:
		return c.Name + "|eds:" + c.EDSServiceName
	case xds.ClusterLogicalDNS:
		return c.Name + "|dns:" + c.DNSHostPort
	}
	return fmt.Sprintf("%s|static:%p", c.Name, c.StaticEndpoints)
}

// follow makes leaves, in order, the leaves whose endpoints are merged:
// watches of leaves that stay are kept, with their endpoints.
func (l *aggregateLeaves) follow(leaves []*xds.Cluster) {
	l.mu.Lock()
	old := map[string]*leafWatch{}
	for _, lw := range l.list {
		old[lw.key] = lw
	}
	var next, started []*leafWatch
	var starts []*xds.Cluster
	for _, c := range leaves {
		k := leafKey(c)
		if lw := old[k]; lw != nil {
			delete(old, k)
			next = append(next, lw)
			continue
		}
		lw := &leafWatch{name: c.Name, key: k}
		next = append(next, lw)
		started, starts = append(started, lw), append(starts, c)
	}
	l.list = next
	l.mu.Unlock()
	// Watches start and stop outside mu: DNS delivers its known state
	// before Watch returns.
	for _, lw := range old {
		if lw.cancel != nil {
			lw.cancel()
		}
	}
	for i, lw := range started {
		l.start(lw, starts[i])
	}
	l.merge()
}

func (l *aggregateLeaves) start(lw *leafWatch, c *xds.Cluster) {
	switch c.Kind {
	case xds.ClusterEDS:
		lw.cancel = l.x.client.Watch(xds.EndpointsType, c.EDSServiceName, &leafEndpoints{l: l, lw: lw})
	case xds.ClusterLogicalDNS:
		target := c.DNSHostPort
		if l.s.dnsTarget.Load() == nil {
			l.s.dnsTarget.Store(&target)
		}
		lw.cancel = l.x.m.dns.Watch(target, resolver.WatcherFunc(func(st resolver.State) {
			l.report(lw, func() {
				if st.Err == nil || len(st.Endpoints) > 0 {
					lw.eps = st.Endpoints
				}
				lw.err = st.Err
				if lw.err != nil {
					lw.err = fmt.Errorf("underlying cluster %q: %w", lw.name, st.Err)
				}
			})
		}))
	case xds.ClusterStatic:
		l.report(lw, func() {
			if c.StaticEndpoints != nil {
				lw.eps = c.StaticEndpoints.All
			}
		})
	}
}

// report applies f to lw's state and merges, unless lw left meanwhile.
func (l *aggregateLeaves) report(lw *leafWatch, f func()) {
	l.mu.Lock()
	f()
	lw.reported = true
	l.mu.Unlock()
	l.merge()
}

// merge publishes the leaves' endpoints once every leaf has answered, as
// grpc-go waits for the whole graph: leaf i's priority p becomes the sum
// of the priority counts of leaves 0..i-1, plus p. An address in two
// leaves keeps its first place.
func (l *aggregateLeaves) merge() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped || len(l.list) == 0 {
		return
	}
	var all []resolver.Endpoint
	var errs []error
	seen := map[string]bool{}
	offset := uint32(0)
	for _, lw := range l.list {
		if !lw.reported {
			return
		}
		top := uint32(0)
		for _, e := range lw.eps {
			top = max(top, e.Priority)
			if seen[e.Addr] {
				continue
			}
			seen[e.Addr] = true
			e.Priority += offset
			all = append(all, e)
		}
		offset += top + 1
		if lw.err != nil {
			errs = append(errs, lw.err)
		}
	}
	// Under mu, so that merges from different leaves land in order.
	l.s.balancer().Update(all)
	switch {
	case len(all) > 0:
		l.s.setErr(nil)
	case len(errs) > 0:
		l.s.setErr(fmt.Errorf("aggregate cluster %q: %w", l.root, errors.Join(errs...)))
	default:
		l.s.setErr(fmt.Errorf("aggregate cluster %q: no underlying cluster has endpoints", l.root))
	}
	l.s.markReady()
}

// stop cancels every leaf watch; nothing is merged after it.
func (l *aggregateLeaves) stop() {
	l.mu.Lock()
	l.stopped = true
	list := l.list
	l.list = nil
	l.mu.Unlock()
	for _, lw := range list {
		if lw.cancel != nil {
			lw.cancel()
		}
	}
}

// leafEndpoints follows an EDS leaf's endpoints.
type leafEndpoints struct {
	l  *aggregateLeaves
	lw *leafWatch
}

func (e *leafEndpoints) OnUpdate(r xds.Resource) {
	e.l.report(e.lw, func() { e.lw.eps, e.lw.err = r.(*xds.Endpoints).All, nil })
}

func (e *leafEndpoints) OnError(err error) {
	e.l.report(e.lw, func() {
		if len(e.lw.eps) == 0 {
			e.lw.err = fmt.Errorf("endpoints of underlying cluster %q: %w", e.lw.name, err)
		}
	})
}

func (e *leafEndpoints) OnDoesNotExist() {
	e.l.report(e.lw, func() {
		e.lw.eps, e.lw.err = nil, fmt.Errorf("endpoints of underlying cluster %q do not exist", e.lw.name)
	})
}
