package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/fault"
	"github.com/weftmesh/weft/internal/route"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/resilience"
	"github.com/weftmesh/weft/resolver"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

// maxXDSHosts bounds the listener watches the HTTP path opens for hosts it
// meets. A program that calls thousands of external hosts must not turn
// each into a subscription; past the bound, unknown hosts pass through.
const maxXDSHosts = 4096

// ErrNoRoute is returned for a request to a mesh service whose route
// configuration has no route for it: the mesh's 404, never a random cluster.
var ErrNoRoute = errors.New("weft: no route matches the request")

// xdsPath routes HTTP requests by the control plane's configuration.
type xdsPath struct {
	m      *Mesh
	client *xds.Client
	// serverURI is the bootstrap's first (primary) management server.
	serverURI string
	// bootstrap names listeners: a URL host through
	// client_default_listener_resource_name_template, an xDS authority's
	// host (hostKey) through the authority's template.
	bootstrap *xds.Bootstrap
	// serverTemplate is server_listener_resource_name_template: set, the
	// mesh's servers follow the control plane's inbound listeners.
	serverTemplate string
	// locality is the bootstrap node's, the caller's for zone-aware
	// routing; sessions is set once any listener or route has a
	// stateful session, so requests before that skip the lookup.
	locality resolver.Locality
	sessions atomic.Bool
	// mirrors are the mirrored copies in flight, ended by close.
	mirrors *mirrors
	// sourceIP is what source-IP hash policies hash (see sourceIP).
	sourceIP string

	hosts atomic.Pointer[map[string]*xdsHost] // by URL host; copy on write
	mu    sync.Mutex                          // guards writes to hosts and clusters
	// clusters are created on first use and live until unused: a cluster
	// many routes share keeps one balancer, budget and set of thresholds.
	// clusterSnap is a copy the request path reads without locking.
	clusters    map[string]*service
	clusterSnap atomic.Pointer[map[string]*service]
	warned      bool

	idle time.Duration
	stop chan struct{}
	done chan struct{}
}

// defaultXDSIdleTimeout is how long a host or cluster may go unused before
// its subscriptions are closed; the next request opens them again.
const defaultXDSIdleTimeout = 5 * time.Minute

// sweep closes the subscriptions of hosts and clusters no request used in
// the last idle period, so a program that talked to a service once does
// not follow its configuration forever.
func (x *xdsPath) sweep() {
	defer close(x.done)
	t := time.NewTicker(x.idle)
	defer t.Stop()
	for {
		select {
		case <-x.stop:
			return
		case <-t.C:
		}
		var idleHosts []*xdsHost
		var idleClusters []*service
		x.mu.Lock()
		cur := *x.hosts.Load()
		next := make(map[string]*xdsHost, len(cur))
		for k, h := range cur {
			if h.used.Swap(false) || h.pins.Load() > 0 {
				next[k] = h
			} else {
				idleHosts = append(idleHosts, h)
			}
		}
		x.hosts.Store(&next)
		for name, s := range x.clusters {
			if !s.used.Swap(false) && s.pins.Load() == 0 {
				idleClusters = append(idleClusters, s)
				delete(x.clusters, name)
			}
		}
		if len(idleClusters) > 0 {
			x.publishClustersLocked()
		}
		x.mu.Unlock()
		for _, h := range idleHosts {
			h.cancel()
		}
		for _, s := range idleClusters {
			s.close()
		}
		if len(idleHosts)+len(idleClusters) > 0 {
			x.m.log.Debug("weft: closed idle xDS subscriptions", "hosts", len(idleHosts), "clusters", len(idleClusters))
		}
	}
}

func newXDSPath(m *Mesh, raw []byte, source string) (*xdsPath, error) {
	b, err := xds.ParseBootstrap(raw)
	if err != nil {
		return nil, &EnvError{Var: source, Value: abbreviate(string(raw)), Err: err}
	}
	cpl := &cpLogger{log: m.log}
	opts := []xds.Option{xds.WithEvents(cpl.event)}
	if m.cfg.xdsDelta {
		opts = append(opts, xds.WithDelta())
	}
	c, err := xds.New(b, opts...)
	if err != nil {
		return nil, &EnvError{Var: source, Value: abbreviate(string(raw)), Err: err}
	}
	x := &xdsPath{m: m, client: c, serverURI: b.Servers[0].URI, bootstrap: b,
		serverTemplate: b.ServerListenerResourceNameTemplate, clusters: map[string]*service{}, locality: b.Node.Locality,
		sourceIP: sourceIP(b.Node.Metadata),
		idle:     m.cfg.xdsIdle, stop: make(chan struct{}), done: make(chan struct{}), mirrors: newMirrors()}
	if x.idle <= 0 {
		x.idle = defaultXDSIdleTimeout
	}
	empty := map[string]*xdsHost{}
	x.hosts.Store(&empty)
	x.publishClustersLocked()
	go x.sweep()
	return x, nil
}

func (x *xdsPath) close() {
	close(x.stop)
	<-x.done
	// Copies in flight end before the clusters they use close.
	x.mirrors.close()
	x.mu.Lock()
	hosts := *x.hosts.Load()
	clusters := x.clusters
	x.clusters = map[string]*service{}
	x.publishClustersLocked()
	x.mu.Unlock()
	for _, h := range hosts {
		h.cancel()
	}
	for _, c := range clusters {
		c.close()
	}
	x.client.Close()
}

// xdsHost is the listener a URL host names and its current routes.
type xdsHost struct {
	name                 string      // the Listener resource name
	used                 atomic.Bool // set by requests, cleared by the idle sweep
	ready                chan struct{}
	once                 sync.Once
	state                atomic.Pointer[hostState]
	mu                   sync.Mutex // guards the watches; callbacks are serialized anyway
	rds                  string
	cancelLDS, cancelRDS func()
	// timeout is the listener's max_stream_duration and rdsConfig the
	// last route configuration RDS delivered, so that a listener change
	// that keeps the route configuration's name still takes effect.
	timeout   time.Duration
	rdsConfig *xds.RouteConfig
	session   atomic.Pointer[xds.SessionCookie] // the listener's stateful session
	// faults are the listener's fault filters; counters keeps each
	// filter's count of active faults, by name, across listener versions
	// (max_active_faults bounds the filter, not one version of it).
	faults   []fault.Filter
	counters map[string]*fault.Counter
	// subs are told of every new state (gRPC channels' resolvers); pins
	// counts those channels, which the idle sweep leaves alone.
	subs subscribers
	pins atomic.Int32
}

// hostState is what one listener version says; immutable.
type hostState struct {
	exists bool
	err    error
	routes *xds.RouteConfig
	// plans holds the per-route work done once at config time.
	plans map[*xds.Route]*routePlan
	// defaultTimeout is the listener's max_stream_duration.
	defaultTimeout time.Duration
}

// routePlan is a route's plan (internal/route, shared by both protocols)
// with the round trippers and interceptors built from it, cached for the
// life of the route configuration version that made it.
type routePlan struct {
	*route.Plan
	// label names the route on /tap.
	label string
	// rts caches the retrying round tripper of each (transport, cluster)
	// this route sends to, so a request builds none.
	rts sync.Map // planKey -> *plannedRT
	// grpc caches the route's unary interceptor to each cluster.
	grpc sync.Map // *service -> *plannedGRPC
}

type planKey struct {
	t *transport
	s *service
}

// plannedRT is a route's round tripper to one cluster, valid while the
// cluster's resilience state (replaced when CDS changes thresholds) is res.
type plannedRT struct {
	res *serviceResilience
	rt  http.RoundTripper
}

// roundTripper returns the route's round tripper to svc through t.
func (p *routePlan) roundTripper(t *transport, svc *service) http.RoundTripper {
	res := svc.res.Load()
	key := planKey{t, svc}
	if v, ok := p.rts.Load(key); ok && v.(*plannedRT).res == res {
		return v.(*plannedRT).rt
	}
	rt := p.xdsRoundTripper(&pickTransport{t: t, svc: svc, plan: p}, res)
	p.rts.Store(key, &plannedRT{res: res, rt: rt})
	return rt
}

// markReady follows every new state: it releases the requests waiting
// for the first and tells the subscribers.
func (h *xdsHost) markReady() {
	h.once.Do(func() { close(h.ready) })
	h.subs.notify()
}

// wait blocks until the listener's first state is known, or ctx ends.
func (h *xdsHost) wait(ctx context.Context) error {
	select {
	case <-h.ready:
		return nil
	default:
	}
	select {
	case <-h.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("weft: waiting for listener %q: %w", h.name, ctx.Err())
	}
}

// subscribe calls f after each new state; f must not block.
func (h *xdsHost) subscribe(f func()) (cancel func()) { return h.subs.subscribe(f) }

func (h *xdsHost) cancel() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancelRDS != nil {
		h.cancelRDS()
	}
	if h.cancelLDS != nil {
		h.cancelLDS()
	}
}

// host returns the watch of the listener urlHost names, starting it on
// first use; nil when the bound on watched hosts is reached.
func (x *xdsPath) host(urlHost string) *xdsHost {
	if h := (*x.hosts.Load())[urlHost]; h != nil {
		return h
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.hostLocked(urlHost)
}

// pinHost is host for a gRPC channel, which holds the watch until it
// closes (then pins.Add(-1)): pinned under the lock the sweep takes, so
// the sweep never closes a host between the lookup and the pin.
func (x *xdsPath) pinHost(urlHost string) *xdsHost {
	x.mu.Lock()
	defer x.mu.Unlock()
	h := x.hostLocked(urlHost)
	if h != nil {
		h.pins.Add(1)
	}
	return h
}

func (x *xdsPath) hostLocked(urlHost string) *xdsHost {
	cur := *x.hosts.Load()
	if h := cur[urlHost]; h != nil {
		return h
	}
	if len(cur) >= maxXDSHosts {
		if !x.warned {
			x.warned = true
			x.m.log.Warn("weft: xDS host limit reached; further unknown hosts pass through", "limit", maxXDSHosts)
		}
		return nil
	}
	name, err := x.listenerName(urlHost)
	if err != nil {
		return nil // DialGRPC checked the authority already
	}
	h := &xdsHost{name: name, ready: make(chan struct{})}
	next := make(map[string]*xdsHost, len(cur)+1)
	for k, v := range cur {
		next[k] = v
	}
	next[urlHost] = h
	x.hosts.Store(&next)
	h.cancelLDS = x.client.Watch(xds.ListenerType, name, &listenerWatcher{x: x, h: h})
	return h
}

// hostKey is the key of the listener a gRPC target names: its host, or
// for xds://<authority>/<host> one that no URL host can be.
func hostKey(authority, host string) string {
	if authority == "" {
		return host
	}
	return "xds://" + authority + "/" + host
}

// listenerName is the Listener resource the host key names (gRFC A47).
func (x *xdsPath) listenerName(key string) (string, error) {
	if rest, ok := strings.CutPrefix(key, "xds://"); ok {
		authority, host, _ := strings.Cut(rest, "/")
		return x.bootstrap.ListenerName(authority, host)
	}
	return x.bootstrap.ListenerName("", key)
}

type listenerWatcher struct {
	x *xdsPath
	h *xdsHost
}

// logUnapplied says once per resource version which received fields Weft
// does not apply: grpc-go ignores such fields silently, and a user should
// not have to test whether a config took effect.
func (x *xdsPath) logUnapplied(kind string, r xds.Resource) {
	x.m.metrics.XDSUpdate(context.Background(), kind, true)
	if f := r.UnappliedFields(); len(f) > 0 {
		x.m.log.Info("weft: xDS resource has fields Weft does not apply", "type", kind, "name", r.ResourceName(), "fields", f)
	}
}

func (w *listenerWatcher) OnUpdate(r xds.Resource) {
	w.x.logUnapplied("Listener", r)
	l := r.(*xds.Listener)
	if l.Server != nil {
		w.OnError(errors.New("is a server listener (filter_chains), not an API listener"))
		return
	}
	h := w.h
	w.x.noteSession(l.StatefulSession != nil)
	h.session.Store(l.StatefulSession)
	h.mu.Lock()
	defer h.mu.Unlock()
	// Fault filters are compared by nothing cheaper than their configs:
	// any listener with some is published again.
	changed := l.MaxStreamDuration != h.timeout || len(l.Faults)+len(h.faults) > 0
	h.timeout = l.MaxStreamDuration
	h.setFaults(l.Faults)
	if l.RouteConfig != nil {
		if h.cancelRDS != nil {
			h.cancelRDS()
			h.cancelRDS, h.rds, h.rdsConfig = nil, "", nil
		}
		w.x.publish(h, l.RouteConfig, h.timeout)
		return
	}
	if l.RouteConfigName != h.rds {
		if h.cancelRDS != nil {
			h.cancelRDS()
		}
		h.rds, h.rdsConfig = l.RouteConfigName, nil
		h.cancelRDS = w.x.client.Watch(xds.RouteConfigType, l.RouteConfigName, &routeWatcher{x: w.x, h: h, name: l.RouteConfigName})
		return
	}
	if changed && h.rdsConfig != nil {
		// Same routes, new default timeout: the plans carry it.
		w.x.publish(h, h.rdsConfig, h.timeout)
	}
}

// setFaults installs a listener version's fault filters, each keeping its
// counter of active faults. Callers hold h.mu.
func (h *xdsHost) setFaults(fs []xds.FaultFilter) {
	h.faults = nil
	for _, f := range fs {
		c := h.counters[f.Name]
		if c == nil {
			if h.counters == nil {
				h.counters = map[string]*fault.Counter{}
			}
			c = &fault.Counter{}
			h.counters[f.Name] = c
		}
		h.faults = append(h.faults, fault.Filter{Name: f.Name, Default: f.Config, Active: c})
	}
}

// countRejected records a NACKed resource; an unreachable control plane
// is no rejection.
func (x *xdsPath) countRejected(kind string, err error) {
	var re *xds.ResourceError
	if errors.As(err, &re) {
		x.m.metrics.XDSUpdate(context.Background(), kind, false)
	}
}

func (w *listenerWatcher) OnError(err error) {
	w.x.countRejected("Listener", err)
	if w.h.state.Load() == nil {
		w.h.state.Store(&hostState{exists: true, err: fmt.Errorf("weft: listener %q: %w", w.h.name, err)})
		w.h.markReady()
	}
}

// OnDoesNotExist: the host is not a mesh service; requests pass through.
func (w *listenerWatcher) OnDoesNotExist() {
	w.h.state.Store(&hostState{exists: false})
	w.h.markReady()
}

type routeWatcher struct {
	x    *xdsPath
	h    *xdsHost
	name string
}

func (w *routeWatcher) OnUpdate(r xds.Resource) {
	w.x.logUnapplied("RouteConfiguration", r)
	h := w.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.rds != w.name {
		return // the listener has moved to other routes since
	}
	h.rdsConfig = r.(*xds.RouteConfig)
	w.x.publish(h, h.rdsConfig, h.timeout)
}

func (w *routeWatcher) OnError(err error) {
	w.x.countRejected("RouteConfiguration", err)
	if w.h.state.Load() == nil {
		w.h.state.Store(&hostState{exists: true, err: fmt.Errorf("weft: route configuration %q: %w", w.h.rds, err)})
		w.h.markReady()
	}
}

func (w *routeWatcher) OnDoesNotExist() {
	w.h.state.Store(&hostState{exists: true, err: fmt.Errorf("weft: route configuration %q does not exist", w.h.rds)})
	w.h.markReady()
}

// publish installs a route configuration, planning each route once.
// Callers hold h.mu.
func (x *xdsPath) publish(h *xdsHost, rc *xds.RouteConfig, listenerTimeout time.Duration) {
	st := &hostState{exists: true, routes: rc, plans: map[*xds.Route]*routePlan{}, defaultTimeout: listenerTimeout}
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			st.plans[r] = &routePlan{Plan: route.New(r, listenerTimeout, h.faults...), label: routeLabel(r)}
			x.noteSession(r.Session != nil)
		}
	}
	h.state.Store(st)
	h.markReady()
}

// roundTrip sends a request to the mesh service its host names. handled is
// false when the control plane says the host is not a mesh service.
func (x *xdsPath) roundTrip(t *transport, req *http.Request) (resp *http.Response, handled bool, err error) {
	h := x.host(req.URL.Host)
	if h == nil {
		return nil, false, nil
	}
	h.used.Store(true)
	ctx := req.Context()
	var start time.Time
	if x.m.golden != nil {
		start = time.Now()
	}
	if err := h.wait(ctx); err != nil {
		closeBody(req)
		return nil, true, err
	}
	st := h.state.Load()
	if !st.exists {
		return nil, false, nil
	}
	if st.err != nil && st.routes == nil {
		closeBody(req)
		return nil, true, st.err
	}
	mreq := xds.RequestFromHTTP(req)
	rt, ok := st.routes.Match(req.URL.Host, &mreq)
	if ok && x.m.tap.Active() {
		tapFrom(ctx).setRoute(st.plans[rt].label, "")
	}
	if ok && (rt.Action.Kind == xds.ActionRedirect || rt.Action.Kind == xds.ActionDirectResponse) {
		// Envoy answers these routes itself; so does Weft, with no
		// upstream contacted. An http.Client then follows a redirect
		// by its own CheckRedirect policy.
		closeBody(req)
		resp = route.Local(rt, req)
		route.ResponseHeaders(resp.Header, &rt.Action, "")
		return resp, true, nil
	}
	if !ok || rt.Action.Kind != xds.ActionForward {
		closeBody(req)
		return nil, true, fmt.Errorf("%w: host %q path %q (listener %q)", ErrNoRoute, req.URL.Host, req.URL.Path, h.name)
	}
	plan := st.plans[rt]
	cluster, faults := plan.PickCluster()
	if faults != nil {
		// Faults come before the pick, as Envoy's fault filter runs
		// before its router: an aborted request reaches no endpoint.
		abort, err := faults.Inject(ctx, &fault.Request{Match: fault.MatchOf(&mreq), Host: req.URL.Host, Cluster: cluster}, nil)
		if err != nil {
			closeBody(req)
			return nil, true, err
		}
		if abort != nil {
			closeBody(req)
			return abort.HTTPResponse(req), true, nil
		}
	}
	svc := x.cluster(cluster)
	if svc == nil {
		closeBody(req)
		return nil, true, errClosed
	}
	if x.m.tap.Active() {
		tapFrom(ctx).setRoute(st.plans[rt].label, svc.name)
	}
	svc.used.Store(true)
	// The cluster's thresholds and budget come with CDS, before its
	// endpoints: wait for them so the first requests obey them too.
	if err := svc.waitReady(ctx); err != nil {
		closeBody(req)
		return nil, true, err
	}
	if x.sessions.Load() {
		req = withSession(req, xdsSession(h.session.Load(), rt))
	}
	if len(rt.Action.MirrorPolicies) > 0 {
		req = x.mirror(t, plan, cluster, req)
	}
	resp, err = plan.roundTripper(t, svc).RoundTrip(req)
	if err != nil {
		// An overflow becomes Envoy's 503, with the route's response
		// headers below as on any local reply.
		resp, err = t.failed(req, svc, err)
	}
	if x.m.golden != nil {
		x.m.goldenOutbound(svc.name, rt.Name, start, resp, err)
	}
	if resp != nil && plan.MutatesResponse {
		route.ResponseHeaders(resp.Header, &rt.Action, cluster)
	}
	return resp, true, err
}

// cluster returns the balancing state of an xDS cluster, watching its CDS
// (and EDS) resources from first use.
func (x *xdsPath) cluster(name string) *service {
	if s := (*x.clusterSnap.Load())[name]; s != nil {
		return s
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.clusterLocked(name)
}

// pinCluster is cluster for a gRPC channel, which follows the cluster
// until it lets go (pins.Add(-1)); see pinHost.
func (x *xdsPath) pinCluster(name string) *service {
	x.mu.Lock()
	defer x.mu.Unlock()
	s := x.clusterLocked(name)
	if s != nil {
		s.pins.Add(1)
	}
	return s
}

func (x *xdsPath) clusterLocked(name string) *service {
	if s := x.clusters[name]; s != nil {
		return s
	}
	if x.m.isClosed() {
		return nil
	}
	rr := balancer.Get(balancer.RoundRobin)
	s := newService(name, rr, nil, x.m.newServiceResilience(), x.m.logEjections(name))
	s.policy.Store(&clusterPolicy{b: rr, name: rr.Name()})
	s.stats = x.m.metrics.Cluster(name)
	s.resolveNow = func() {
		if target := s.dnsTarget.Load(); target != nil {
			x.m.dns.ResolveNow(*target)
		}
	}
	cw := &clusterWatcher{x: x, s: s}
	cancelCDS := x.client.Watch(xds.ClusterType, name, cw)
	s.cancel = func() {
		cancelCDS()
		cw.stopEndpoints()
		cw.stopLoad()
	}
	x.clusters[name] = s
	x.publishClustersLocked()
	return s
}

// publishClustersLocked copies the cluster map for the request path.
func (x *xdsPath) publishClustersLocked() {
	snap := make(map[string]*service, len(x.clusters))
	for k, v := range x.clusters {
		snap[k] = v
	}
	x.clusterSnap.Store(&snap)
}

// clusterWatcher follows a Cluster and the endpoints it names.
type clusterWatcher struct {
	x *xdsPath
	s *service

	mu          sync.Mutex
	policy      string
	lbConfig    any
	outlier     string // the outlier detection config in force, printed
	lbExtras    string // zone-aware and slow start configs in force, printed
	tls         string // the upstream TLS config in force, printed
	proto       httpProto
	limits      xds.CircuitBreaker
	endpoints   string // what the endpoint watch is on: "eds:<name>" or "dns:<host:port>"
	cancelEndpt func()
	// agg follows an aggregate cluster's underlying clusters, and leaves
	// their endpoints; both nil for other clusters.
	agg    *xds.Aggregate
	leaves *aggregateLeaves
	// loadKey is the cluster_service_name reported under, with a
	// leading "+", or "" when the cluster reports no load; stopLRS ends
	// the reporting.
	loadKey string
	stopLRS func()
}

func (w *clusterWatcher) stopEndpoints() {
	w.mu.Lock()
	if w.cancelEndpt != nil {
		w.cancelEndpt()
		w.cancelEndpt, w.endpoints = nil, ""
	}
	agg := w.stopAggregateLocked()
	w.mu.Unlock()
	if agg != nil {
		// Outside w.mu: the aggregate calls its watcher, which takes it,
		// under its own lock.
		agg.Close()
	}
}

func (w *clusterWatcher) OnUpdate(r xds.Resource) {
	w.x.logUnapplied("Cluster", r)
	c := r.(*xds.Cluster)
	w.s.cds.Store(c)
	if c.Kind == xds.ClusterAggregate {
		// An aggregate cluster reports no load (see lrsLoad).
		w.mu.Lock()
		w.applyLoadLocked(&xds.Cluster{})
		w.mu.Unlock()
		w.followAggregate(c)
		return
	}
	s := w.s
	// gRPC channels learn of every change: policy, TLS, thresholds.
	defer s.subs.notify()
	w.mu.Lock()
	agg := w.stopAggregateLocked()
	defer func() {
		w.mu.Unlock()
		if agg != nil {
			agg.Close()
		}
	}()
	w.applyLocked(c)

	switch c.Kind {
	case xds.ClusterEDS:
		key := "eds:" + c.EDSServiceName
		if key != w.endpoints {
			if w.cancelEndpt != nil {
				w.cancelEndpt()
			}
			w.endpoints = key
			w.cancelEndpt = w.x.client.Watch(xds.EndpointsType, c.EDSServiceName, &endpointsWatcher{s: s})
		}
	case xds.ClusterLogicalDNS:
		key := "dns:" + c.DNSHostPort
		if key != w.endpoints {
			if w.cancelEndpt != nil {
				w.cancelEndpt()
			}
			w.endpoints = key
			target := c.DNSHostPort
			s.dnsTarget.Store(&target)
			// The DNS name is the endpoints' hostname, as Envoy's
			// logical DNS host has it, for auto_host_rewrite.
			hostname, _, err := net.SplitHostPort(target)
			if err != nil {
				hostname = target
			}
			w.cancelEndpt = w.x.m.dns.Watch(target, resolver.WatcherFunc(func(st resolver.State) {
				s.setErr(st.Err)
				if st.Err == nil || len(st.Endpoints) > 0 {
					eps := make([]resolver.Endpoint, len(st.Endpoints))
					for i, e := range st.Endpoints {
						e.Hostname = hostname
						eps[i] = e
					}
					s.balancer().Update(eps)
				}
				s.markReady()
			}))
		}
	case xds.ClusterStatic:
		if w.cancelEndpt != nil {
			w.cancelEndpt()
			w.cancelEndpt = nil
		}
		w.endpoints = ""
		if c.StaticEndpoints != nil {
			s.balancer().Update(c.StaticEndpoints.All)
		}
		s.setErr(nil)
		s.markReady()
	}
}

// applyLocked applies what a cluster says about balancing, upstream TLS
// and thresholds; the endpoints are the caller's.
func (w *clusterWatcher) applyLocked(c *xds.Cluster) {
	s := w.s
	if c.LBPolicy != w.policy || fmt.Sprint(c.LBConfig) != fmt.Sprint(w.lbConfig) || fmt.Sprint(c.OutlierDetection) != w.outlier ||
		lbExtras(c) != w.lbExtras {
		w.policy, w.lbConfig, w.outlier, w.lbExtras = c.LBPolicy, c.LBConfig, fmt.Sprint(c.OutlierDetection), lbExtras(c)
		b, cfg, name := w.x.balancerFor(c)
		old := s.balancer()
		nb := balancer.NewCluster(b, cfg, s.clusterOpts...)
		var eps []resolver.Endpoint
		for _, e := range old.Endpoints() {
			eps = append(eps, e.Endpoint)
		}
		if len(eps) > 0 {
			nb.Update(eps)
		}
		s.bal.Store(nb)
		old.Close()
		s.policy.Store(&clusterPolicy{b: b, cfg: cfg, name: name, gen: s.gen.Add(1), load: s.policy.Load().load})
	}
	if tls, proto := fmt.Sprint(c.TLS), w.x.m.clusterProto(c); tls != w.tls || proto != w.proto {
		tlsChanged := tls != w.tls
		w.tls, w.proto = tls, proto
		// The new transport goes in before the old one of the other kind
		// goes out, so that no request meanwhile takes the mesh's shared
		// transport: upstream TLS is read first.
		up, pt := w.x.upstreamFor(c, proto), w.x.protoFor(c, proto)
		var old *upstreamTLS
		var oldpt *protoTransport
		if up != nil {
			old, oldpt = s.upstream.Swap(up), s.proto.Swap(pt)
		} else {
			oldpt = s.proto.Swap(pt)
			old = s.upstream.Swap(up)
		}
		old.closeIdle()
		oldpt.closeIdle()
		if tlsChanged {
			// gRPC channels reconnect to the cluster with the new TLS;
			// they speak HTTP/2 whatever the cluster's HTTP protocol.
			p := *s.policy.Load()
			p.gen = s.gen.Add(1)
			s.policy.Store(&p)
		}
	}
	w.applyLoadLocked(c)
	if c.CircuitBreaker != w.limits {
		w.limits = c.CircuitBreaker
		res := clusterResilience(c.CircuitBreaker)
		s.res.Store(&res)
	}
}

func (w *clusterWatcher) OnError(err error) {
	w.x.countRejected("Cluster", err)
	if w.s.lastErr.Load() == nil && len(w.s.balancer().Endpoints()) == 0 {
		w.s.setErr(fmt.Errorf("cluster %q: %w", w.s.name, err))
		w.s.markReady()
	}
}

func (w *clusterWatcher) OnDoesNotExist() {
	w.s.balancer().Update(nil)
	w.s.setErr(fmt.Errorf("cluster %q does not exist", w.s.name))
	w.s.markReady()
}

type endpointsWatcher struct{ s *service }

func (w *endpointsWatcher) OnUpdate(r xds.Resource) {
	w.s.balancer().Update(r.(*xds.Endpoints).All)
	w.s.setErr(nil)
	w.s.markReady()
}

func (w *endpointsWatcher) OnError(err error) {
	if len(w.s.balancer().Endpoints()) == 0 {
		w.s.setErr(fmt.Errorf("endpoints of %q: %w", w.s.name, err))
		w.s.markReady()
	}
}

func (w *endpointsWatcher) OnDoesNotExist() {
	w.s.balancer().Update(nil)
	w.s.setErr(fmt.Errorf("endpoints of cluster %q do not exist", w.s.name))
	w.s.markReady()
}

// balancerFor builds a cluster's balancer: its lb policy inside Envoy's
// locality/priority failover, inside outlier detection when the cluster
// asks for it.
func (x *xdsPath) balancerFor(c *xds.Cluster) (b balancer.Builder, cfg any, policy string) {
	b, cfg = x.policyFor(c)
	policy = b.Name()
	b = x.priorityLocality(c, b)
	if od := c.OutlierDetection; od != nil {
		b = balancer.NewOutlierDetection(b, outlierConfig(od))
	}
	return b, cfg, policy
}

// outlierConfig maps the xDS outlier detection to the balancer's. Fields
// the control plane left unset already hold Envoy's defaults.
func outlierConfig(od *xds.OutlierDetection) balancer.OutlierConfig {
	cfg := balancer.OutlierConfig{
		Interval: od.Interval, BaseEjectionTime: od.BaseEjectionTime, MaxEjectionTime: od.MaxEjectionTime,
		MaxEjectionPercent: od.MaxEjectionPercent,
		ConsecutiveErrors:  int(od.Consecutive5xx), ConsecutiveGatewayErrors: int(od.ConsecutiveGatewayFailure),
		SuccessRate: balancer.SuccessRateEjection{Disabled: true},
	}
	if od.Consecutive5xx == 0 {
		cfg.ConsecutiveErrors = -1
	}
	if sr := od.SuccessRate; sr != nil {
		cfg.SuccessRate = balancer.SuccessRateEjection{StdevFactor: sr.StdevFactor, MinimumHosts: sr.MinimumHosts,
			RequestVolume: sr.RequestVolume, EnforcementPercentage: sr.EnforcementPercentage}
	}
	if fp := od.FailurePercentage; fp != nil {
		cfg.FailurePercentage = balancer.FailurePercentageEjection{Enabled: true, Threshold: fp.Threshold,
			MinimumHosts: fp.MinimumHosts, RequestVolume: fp.RequestVolume, EnforcementPercentage: fp.EnforcementPercentage}
	}
	return cfg
}

// policyFor maps a cluster's lb policy to its registered Weft policy and
// parsed config. The xDS client names only registered policies (a custom
// one, gRFC A52, by its registry name: p2c_ewma for weft_p2c_ewma) and has
// refused a config the policy refuses, as grpc-go's does; were either to
// get here anyway, it would run round_robin, or the policy's defaults,
// with a warning naming it.
func (x *xdsPath) policyFor(c *xds.Cluster) (balancer.Builder, any) {
	b := balancer.Get(c.LBPolicy)
	if b == nil {
		x.m.log.Warn("weft: cluster asks for an unknown balancer; using round_robin", "cluster", c.Name, "lb_policy", c.LBPolicy)
		return balancer.Get(balancer.RoundRobin), nil
	}
	var js []byte
	switch cfg := c.LBConfig.(type) {
	case xds.RingHashConfig:
		js, _ = json.Marshal(map[string]uint64{"minRingSize": cfg.MinRingSize, "maxRingSize": cfg.MaxRingSize})
	case xds.MaglevConfig:
		js, _ = json.Marshal(map[string]uint64{"tableSize": cfg.TableSize})
	case xds.LeastRequestConfig:
		js, _ = json.Marshal(map[string]any{"choiceCount": cfg.ChoiceCount, "activeRequestBias": cfg.ActiveRequestBias})
	case xds.ClientSideWRRConfig:
		js, _ = json.Marshal(map[string]any{"enableOobLoadReport": cfg.EnableOOBLoadReport,
			"oobReportingPeriod": cfg.OOBReportingPeriod.String(), "blackoutPeriod": cfg.BlackoutPeriod.String(),
			"weightExpirationPeriod": cfg.WeightExpirationPeriod.String(), "weightUpdatePeriod": cfg.WeightUpdatePeriod.String(),
			"errorUtilizationPenalty": cfg.ErrorUtilizationPenalty})
	case json.RawMessage:
		js = cfg
	}
	if p, ok := b.(balancer.ConfigParser); ok && js != nil {
		parsed, err := p.ParseConfig(js)
		if err != nil {
			x.m.log.Warn("weft: cluster's balancer config rejected; using the policy's defaults", "cluster", c.Name, "error", err)
			return b, nil
		}
		return b, parsed
	}
	return b, nil
}

// limitsFrom reads xDS thresholds; 0 (unset) keeps Envoy's defaults.
func limitsFrom(cb xds.CircuitBreaker) resilience.Limits {
	return resilience.Limits{
		MaxPendingRequests: int64(cb.MaxPendingRequests),
		MaxRequests:        int64(cb.MaxRequests),
		MaxRetries:         int64(cb.MaxRetries),
	}
}

// resources is the admin endpoint's view of the xDS state
// (/config_dump?format=weft): every resource asked for, its state and
// version, the last NACK, and the fields received but not applied.
func (x *xdsPath) resources(withBodies bool) []admin.Resource {
	var out []admin.Resource
	for _, r := range x.client.Dump() {
		e := admin.Resource{Type: r.Type.String(), Name: r.Name, State: string(r.State), Version: r.Version,
			LastNACK: r.Error, Unapplied: r.Unapplied}
		if withBodies && r.Resource != nil {
			e.Resource = r.Resource
		}
		out = append(out, e)
	}
	return out
}

// upstreamTLS is how requests reach a cluster that asks for upstream TLS.
type upstreamTLS struct {
	rt    *http.Transport
	proto httpProto // the cluster's HTTP protocol, which rt speaks
	// creds are the same TLS for the cluster's gRPC sub-connections.
	creds credentials.TransportCredentials
	err   error
}

// upstreamFor builds a cluster's TLS transport: mutual TLS from the
// service's identity, accepting only servers whose SPIFFE ID matches one
// of the cluster's SAN matchers (any member of this trust domain when it
// lists none). A cluster that asks for TLS from a service without an
// identity fails its requests rather than sending plaintext.
func (x *xdsPath) upstreamFor(c *xds.Cluster, proto httpProto) *upstreamTLS {
	if c.TLS == nil {
		return nil
	}
	id := x.m.id
	if id == nil {
		return &upstreamTLS{err: fmt.Errorf("weft: cluster %q requires TLS (its CDS resource has a transport socket) but this service has no SPIFFE identity", c.Name)}
	}
	authorize := security.AuthorizeMemberOf(id.td)
	if sans := c.TLS.SANMatchers; len(sans) > 0 {
		authorize = func(peer spiffeid.ID) error {
			for _, m := range sans {
				if m.Match(peer.String()) {
					return nil
				}
			}
			return fmt.Errorf("weft: %s is not an allowed identity of cluster %q", peer, c.Name)
		}
	}
	t := endpointTransport(x.m.base, security.ClientTLSConfig(id.src, authorize), proto)
	return &upstreamTLS{rt: t, proto: proto, creds: credentials.NewTLS(security.ClientTLSConfig(id.src, authorize))}
}

// closeIdle closes the idle connections of u's transport; u may be nil,
// or hold only the error that there is none.
func (u *upstreamTLS) closeIdle() {
	if u != nil && u.rt != nil {
		u.rt.CloseIdleConnections()
	}
}

// protoFor builds the transport of a cluster without upstream TLS of its
// own that speaks another protocol than the mesh's shared transport, or
// returns nil when that transport serves it. In the clear auto_config is
// HTTP/1.1, so it needs no transport of its own in an HTTP/1.1 mesh.
func (x *xdsPath) protoFor(c *xds.Cluster, proto httpProto) *protoTransport {
	m := x.m
	if c.TLS != nil {
		return nil
	}
	tc := m.meshTLS()
	if tc == nil && proto == protoAuto {
		proto = protoHTTP1
	}
	if proto == m.meshProto() {
		return nil
	}
	return &protoTransport{proto: proto, rt: endpointTransport(m.base, tc, proto)}
}
