package xds

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/weftmesh/weft/resolver"
)

// lrsFeature is the client feature an LRS client that honours
// send_all_clusters advertises in its first request's node, as grpc-go's
// does.
const lrsFeature = "envoy.lrs.supports_send_all_clusters"

// ClusterLoad counts the calls of one cluster (and EDS service) for load
// reporting (LRS). Its methods are safe for concurrent use; Locality and
// the LocalityLoad methods do not allocate once a locality has been seen.
type ClusterLoad struct {
	cluster, service string

	mu         sync.RWMutex
	localities map[resolver.Locality]*LocalityLoad

	// refs and lastReport are guarded by the Client's lrs.mu.
	refs       int
	lastReport time.Time
}

// LocalityLoad is one locality's counters in a ClusterLoad.
type LocalityLoad struct {
	issued, succeeded, errored atomic.Uint64
	inProgress                 atomic.Int64
}

// Locality returns the counters of calls to endpoints of l.
func (c *ClusterLoad) Locality(l resolver.Locality) *LocalityLoad {
	c.mu.RLock()
	ll := c.localities[l]
	c.mu.RUnlock()
	if ll != nil {
		return ll
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ll = c.localities[l]; ll == nil {
		ll = &LocalityLoad{}
		c.localities[l] = ll
	}
	return ll
}

// Start counts a call placed on an endpoint of the locality: issued, and
// in progress until Done.
func (l *LocalityLoad) Start() {
	l.issued.Add(1)
	l.inProgress.Add(1)
}

// Done counts the end of a call Start counted, as an error when failed.
func (l *LocalityLoad) Done(failed bool) {
	l.inProgress.Add(-1)
	if failed {
		l.errored.Add(1)
	} else {
		l.succeeded.Add(1)
	}
}

// lrsState is a Client's load reporting: the clusters reporting and the
// stream to the management server, running while any cluster reports.
type lrsState struct {
	mu       sync.Mutex
	clusters map[[2]string]*ClusterLoad
	// retired are clusters that stopped reporting since the last report:
	// their last counts go in the next one.
	retired []*ClusterLoad
	cancel  context.CancelFunc
	done    chan struct{}
	// flush asks a stream waiting for its next report to send one now
	// and close the channel it is given: the final report, before the
	// stream closes, as grpc-go sends it.
	flush chan chan struct{}
}

// finalReportTimeout bounds the wait for the final report when the last
// cluster stops reporting.
const finalReportTimeout = time.Second

// ReportLoad starts counting the load of cluster, whose endpoints come
// from the EDS resource service, for the management server the cluster
// came from (its lrs_server is self), and returns the counters and the
// function that stops counting. The Client keeps one LRS stream to its
// management server while any cluster reports, as grpc-go does, and
// closes it when the last one stops. Calling stop more than once is
// harmless.
func (c *Client) ReportLoad(cluster, service string) (load *ClusterLoad, stop func()) {
	if IsXDSTP(cluster) {
		if target, canonical, err := c.route(cluster); err == nil && target != c {
			return target.ReportLoad(canonical, service)
		}
	}
	c.lrs.mu.Lock()
	defer c.lrs.mu.Unlock()
	if c.lrs.clusters == nil {
		c.lrs.clusters = map[[2]string]*ClusterLoad{}
		c.lrs.flush = make(chan chan struct{})
	}
	key := [2]string{cluster, service}
	cl := c.lrs.clusters[key]
	if cl == nil {
		cl = &ClusterLoad{cluster: cluster, service: service, localities: map[resolver.Locality]*LocalityLoad{},
			lastReport: c.cfg.clock.Now()}
		c.lrs.clusters[key] = cl
	}
	cl.refs++
	if c.lrs.cancel == nil && c.ctx.Err() == nil {
		ctx, cancel := context.WithCancel(c.ctx)
		done := make(chan struct{})
		c.lrs.cancel, c.lrs.done = cancel, done
		go func() {
			defer close(done)
			c.runLRS(ctx)
		}()
	}
	var once sync.Once
	return cl, func() { once.Do(func() { c.stopReporting(key, cl) }) }
}

func (c *Client) stopReporting(key [2]string, cl *ClusterLoad) {
	c.lrs.mu.Lock()
	cl.refs--
	if cl.refs == 0 {
		delete(c.lrs.clusters, key)
		c.lrs.retired = append(c.lrs.retired, cl)
	}
	var cancel context.CancelFunc
	var done chan struct{}
	if len(c.lrs.clusters) == 0 {
		cancel, done = c.lrs.cancel, c.lrs.done
		c.lrs.cancel, c.lrs.done = nil, nil
	}
	flush := c.lrs.flush
	c.lrs.mu.Unlock()
	if cancel == nil {
		return
	}
	// A stream between reports sends the last counts now; one not up
	// (connecting, backing off) or busy sending is not waited for.
	sent := make(chan struct{})
	select {
	case flush <- sent:
		t := time.NewTimer(finalReportTimeout)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	default:
	}
	cancel()
	<-done
	c.lrs.mu.Lock()
	if c.lrs.cancel == nil {
		c.lrs.retired = nil // nobody left to report them to
	}
	c.lrs.mu.Unlock()
}

// stopLRS ends the LRS stream, on Close.
func (c *Client) stopLRS() {
	c.lrs.mu.Lock()
	cancel, done := c.lrs.cancel, c.lrs.done
	c.lrs.cancel, c.lrs.done = nil, nil
	c.lrs.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// runLRS keeps an LRS stream up until ctx ends, waiting a jittered
// exponential backoff (the ADS stream's) between failed streams, reset by
// a stream that got the server's first response, as grpc-go resets it.
func (c *Client) runLRS(ctx context.Context) {
	bo := c.cfg.newBackoff()
	for ctx.Err() == nil {
		answered, _ := c.lrsStream(ctx)
		if ctx.Err() != nil {
			return
		}
		if answered {
			bo.Reset()
		}
		if !c.cfg.waitBackoff(ctx, bo) {
			return
		}
	}
}

// lrsConfig is what the server's latest LoadStatsResponse asks for.
type lrsConfig struct {
	all      bool
	clusters []string
	interval time.Duration
}

func parseLoadStatsResponse(r *lrsv3.LoadStatsResponse) (lrsConfig, error) {
	iv := r.GetLoadReportingInterval()
	if err := iv.CheckValid(); err != nil {
		return lrsConfig{}, fmt.Errorf("xds: LRS: load_reporting_interval: %w", err)
	}
	d := iv.AsDuration()
	if d <= 0 {
		return lrsConfig{}, fmt.Errorf("xds: LRS: load_reporting_interval %v is not positive", d)
	}
	return lrsConfig{all: r.GetSendAllClusters(), clusters: r.GetClusters(), interval: d}, nil
}

// lrsStream runs one LRS stream to the server the ADS stream uses: the
// node first, then, after the server's first LoadStatsResponse, a report
// every load_reporting_interval. Unlike grpc-go, which reads only the
// first response, later responses are honoured as Envoy honours them: a
// new cluster list or interval applies from the next report.
func (c *Client) lrsStream(ctx context.Context) (answered bool, err error) {
	idx := int(c.activeServer.Load())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := lrsv3.NewLoadReportingServiceClient(c.conns[idx]).StreamLoadStats(ctx)
	if err != nil {
		return false, err
	}
	node := proto.Clone(c.node).(*corev3.Node)
	node.ClientFeatures = append(node.ClientFeatures, lrsFeature)
	if err := stream.Send(&lrsv3.LoadStatsRequest{Node: node}); err != nil {
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	cfg, err := parseLoadStatsResponse(first)
	if err != nil {
		return false, err
	}
	updates := make(chan lrsConfig, 1)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err == nil {
				var next lrsConfig
				if next, err = parseLoadStatsResponse(r); err == nil {
					select {
					case <-updates: // a newer one replaces one not yet applied
					default:
					}
					updates <- next
					continue
				}
			}
			recvErr <- err
			cancel()
			return
		}
	}()
	defer func() {
		cancel()
		err = errors.Join(err, <-recvErr)
	}()
	tick := make(chan struct{}, 1)
	arm := func(d time.Duration) timer {
		return c.cfg.clock.AfterFunc(d, func() {
			select {
			case tick <- struct{}{}:
			default:
			}
		})
	}
	t := arm(cfg.interval)
	defer func() { t.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case next := <-updates:
			if next.interval != cfg.interval {
				t.Stop()
				t = arm(next.interval)
			}
			cfg = next
		case <-tick:
			t = arm(cfg.interval)
			if err := stream.Send(&lrsv3.LoadStatsRequest{ClusterStats: c.loadStats(cfg)}); err != nil {
				return true, err
			}
		case sent := <-c.lrs.flush:
			err := stream.Send(&lrsv3.LoadStatsRequest{ClusterStats: c.loadStats(cfg)})
			close(sent)
			if err != nil {
				return true, err
			}
		}
	}
}

// loadStats returns the reports of the clusters cfg asks for that have
// anything to report, and starts their next interval: the counters but
// in-progress start again from zero, as in grpc-go.
func (c *Client) loadStats(cfg lrsConfig) []*endpointv3.ClusterStats {
	c.lrs.mu.Lock()
	defer c.lrs.mu.Unlock()
	now := c.cfg.clock.Now()
	var out []*endpointv3.ClusterStats
	add := func(cl *ClusterLoad) {
		if !cfg.all && !contains(cfg.clusters, cl.cluster) {
			return
		}
		if cs := cl.stats(now); cs != nil {
			out = append(out, cs)
		}
	}
	for _, cl := range c.lrs.clusters {
		add(cl)
	}
	for _, cl := range c.lrs.retired {
		add(cl)
	}
	c.lrs.retired = nil
	sort.Slice(out, func(i, j int) bool {
		if out[i].ClusterName != out[j].ClusterName {
			return out[i].ClusterName < out[j].ClusterName
		}
		return out[i].ClusterServiceName < out[j].ClusterServiceName
	})
	return out
}

func contains(names []string, name string) bool {
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// stats takes the cluster's counts since its last report, nil when there
// is nothing to say. Drops are not reported: EDS drop_overloads are not
// applied (they are in the unapplied report), so no call is ever dropped
// by category. Named load metrics wait for ORCA backend metrics.
func (cl *ClusterLoad) stats(now time.Time) *endpointv3.ClusterStats {
	cl.mu.RLock()
	var locs []*endpointv3.UpstreamLocalityStats
	for l, ll := range cl.localities {
		ok, failed, issued := ll.succeeded.Swap(0), ll.errored.Swap(0), ll.issued.Swap(0)
		inProgress := max(ll.inProgress.Load(), 0)
		if ok == 0 && failed == 0 && issued == 0 && inProgress == 0 {
			continue
		}
		locs = append(locs, &endpointv3.UpstreamLocalityStats{
			Locality:                &corev3.Locality{Region: l.Region, Zone: l.Zone, SubZone: l.SubZone},
			TotalSuccessfulRequests: ok,
			TotalRequestsInProgress: uint64(inProgress),
			TotalErrorRequests:      failed,
			TotalIssuedRequests:     issued,
		})
	}
	cl.mu.RUnlock()
	elapsed := now.Sub(cl.lastReport)
	cl.lastReport = now
	if len(locs) == 0 {
		return nil
	}
	sort.Slice(locs, func(i, j int) bool {
		a, b := locs[i].Locality, locs[j].Locality
		if a.Region != b.Region {
			return a.Region < b.Region
		}
		if a.Zone != b.Zone {
			return a.Zone < b.Zone
		}
		return a.SubZone < b.SubZone
	})
	return &endpointv3.ClusterStats{
		ClusterName:           cl.cluster,
		ClusterServiceName:    cl.service,
		UpstreamLocalityStats: locs,
		LoadReportInterval:    durationpb.New(elapsed),
	}
}
