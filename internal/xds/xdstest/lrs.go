package xdstest

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// LRSServer is the load reporting service (envoy.service.load_stats.v3)
// of a Server, on the same gRPC server as its ADS, so a cluster's
// lrs_server self reaches it. go-control-plane has none. It answers each
// stream's first request with the response set by SetResponse (by default
// send_all_clusters every 100ms) and records every report with the node
// id its stream began with. Its methods are safe for concurrent use.
type LRSServer struct {
	lrsv3.UnimplementedLoadReportingServiceServer

	mu      sync.Mutex
	cond    chan struct{}
	resp    *lrsv3.LoadStatsResponse
	streams map[*lrsConn]struct{}
	opened  int
	first   []*lrsv3.LoadStatsRequest
	reports []LoadReport
}

// LoadReport is one LoadStatsRequest after a stream's first, with the
// node id of its stream.
type LoadReport struct {
	Node string
	// Stream numbers the streams in the order they opened, from 1.
	Stream int
	At     time.Time
	Req    *lrsv3.LoadStatsRequest
}

type lrsConn struct {
	push chan *lrsv3.LoadStatsResponse
	kill chan error
}

func newLRSServer() *LRSServer {
	return &LRSServer{
		cond:    make(chan struct{}),
		resp:    &lrsv3.LoadStatsResponse{SendAllClusters: true, LoadReportingInterval: durationpb.New(100 * time.Millisecond)},
		streams: map[*lrsConn]struct{}{},
	}
}

func (l *LRSServer) notifyLocked() {
	close(l.cond)
	l.cond = make(chan struct{})
}

// SetResponse makes r the response new streams get first, and sends it on
// every open stream, as a server changing its mind does.
func (l *LRSServer) SetResponse(r *lrsv3.LoadStatsResponse) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resp = proto.Clone(r).(*lrsv3.LoadStatsResponse)
	for c := range l.streams {
		select {
		case c.push <- l.resp:
		default:
		}
	}
}

// CloseStreams ends every open stream with UNAVAILABLE, as a restarting
// server does; clients are expected to open another.
func (l *LRSServer) CloseStreams() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.streams {
		select {
		case c.kill <- status.Error(codes.Unavailable, "xdstest: LRS stream closed by the server"):
		default:
		}
	}
}

// Streams returns how many LRS streams were ever opened and how many are
// open.
func (l *LRSServer) Streams() (opened, open int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.opened, len(l.streams)
}

// FirstRequests returns each stream's first request (the node), in order.
func (l *LRSServer) FirstRequests() []*lrsv3.LoadStatsRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*lrsv3.LoadStatsRequest(nil), l.first...)
}

// Reports returns every report received so far.
func (l *LRSServer) Reports() []LoadReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]LoadReport(nil), l.reports...)
}

// WaitReport waits until a report satisfies match and returns it.
func (l *LRSServer) WaitReport(ctx context.Context, match func(LoadReport) bool) (LoadReport, error) {
	next := 0
	for {
		l.mu.Lock()
		rs, cond := l.reports[next:], l.cond
		next = len(l.reports)
		l.mu.Unlock()
		for _, r := range rs {
			if match(r) {
				return r, nil
			}
		}
		select {
		case <-ctx.Done():
			return LoadReport{}, fmt.Errorf("xdstest: no matching LRS report: %w", ctx.Err())
		case <-cond:
		}
	}
}

// LocalityCounts are a locality's request counts summed over reports.
type LocalityCounts struct {
	Succeeded, Errors, Issued uint64
	// InProgress is the latest report's.
	InProgress uint64
}

// Totals sums, over every report from node, the counts of cluster per
// locality ("region/zone/subzone").
func (l *LRSServer) Totals(node, cluster string) map[string]LocalityCounts {
	out := map[string]LocalityCounts{}
	for _, r := range l.Reports() {
		if r.Node != node {
			continue
		}
		for _, cs := range r.Req.GetClusterStats() {
			if cs.GetClusterName() != cluster {
				continue
			}
			for _, ls := range cs.GetUpstreamLocalityStats() {
				k := LocalityKey(ls.GetLocality())
				c := out[k]
				c.Succeeded += ls.GetTotalSuccessfulRequests()
				c.Errors += ls.GetTotalErrorRequests()
				c.Issued += ls.GetTotalIssuedRequests()
				c.InProgress = ls.GetTotalRequestsInProgress()
				out[k] = c
			}
		}
	}
	return out
}

// LocalityKey writes l as region/zone/subzone.
func LocalityKey(l *corev3.Locality) string {
	return l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
}

// StreamLoadStats implements the LRS service.
func (l *LRSServer) StreamLoadStats(stream lrsv3.LoadReportingService_StreamLoadStatsServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	c := &lrsConn{push: make(chan *lrsv3.LoadStatsResponse, 4), kill: make(chan error, 1)}
	l.mu.Lock()
	l.opened++
	n := l.opened
	l.first = append(l.first, first)
	l.streams[c] = struct{}{}
	resp := l.resp
	l.notifyLocked()
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.streams, c)
		l.notifyLocked()
		l.mu.Unlock()
	}()
	node := first.GetNode().GetId()
	if err := stream.Send(resp); err != nil {
		return err
	}
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			l.mu.Lock()
			l.reports = append(l.reports, LoadReport{Node: node, Stream: n, At: time.Now(), Req: req})
			l.notifyLocked()
			l.mu.Unlock()
		}
	}()
	for {
		select {
		case r := <-c.push:
			if err := stream.Send(r); err != nil {
				return err
			}
		case err := <-c.kill:
			return err
		case err := <-recvErr:
			return err
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}
