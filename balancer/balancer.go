// Package balancer picks the endpoint each request goes to.
//
// A policy is a [Builder] registered by name from an init function, one
// policy a file, as grpc-go does. A policy's [Balancer] receives a service's
// endpoint set and publishes [Picker]s: immutable snapshots that the data
// path calls concurrently on every request. A pick never blocks and, for the
// built-in policies, never allocates. After each request the data path
// reports its outcome (latency and error class) through [PickResult.Finish],
// which feeds load-aware policies, outlier detection and circuit breaking.
//
// [Cluster] is the glue a data path uses: it keeps one [Endpoint] per
// address across discovery updates (so in-flight counts and latency
// estimates survive them) and always holds the current picker. Every
// registered policy is also registered with grpc-go under the name
// "weft_" + Name(), so gRPC channels run the same code as HTTP clients.
// A Builder composed at run time (a policy inside slow start, priority and
// locality failover and outlier detection, as a mesh builds one per data
// path) cannot be registered by name, grpc-go's registry being global:
// [GRPCServiceConfigFor] hands it to the channels made with the config it
// returns. Inside a channel, the policy sees every serving endpoint with
// its discovery data (weight, locality, priority), those whose connection
// failed as unhealthy, and a call may carry a [GRPCPick], which pins it to
// a session's endpoint and reports where it went.
package balancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/resolver"
)

// ErrNoHealthyEndpoint is returned by a pick when the service has no
// endpoint that may receive traffic.
var ErrNoHealthyEndpoint = errors.New("balancer: no healthy endpoint")

// Endpoint is one backend as policies see it: its discovery data and the
// live figures the data path maintains. One Endpoint exists per address for
// as long as discovery lists that address.
//
// An Endpoint is immutable but for its Load: when discovery changes an
// address's data (its weight, say), the Cluster makes a new Endpoint that
// shares the old one's Load, so figures survive and requests still in
// flight on the old value are counted off correctly.
type Endpoint struct {
	resolver.Endpoint
	load *Load
}

// Load holds the live figures of one address, shared by every Endpoint
// value of that address.
type Load struct {
	inFlight atomic.Int64
	// ewma is the peak-EWMA latency estimate that p2c_ewma keeps; it lives
	// here so that it survives picker rebuilds and endpoint updates.
	ewma ewmaState
	// outlier is the outlier detector's record of this address, nil when
	// no detector watches it. Finish counts outcomes into it, so counting
	// costs a pointer load when outlier detection is off and needs no
	// closure per pick when it is on.
	outlier atomic.Pointer[outlierHost]
	// rampStart is slow start's record of a new address (see
	// NewSlowStart): 0 when the address is not new (it came with the
	// Cluster's first endpoint set), rampPending when the Cluster added it
	// later and no slow-start balancer has seen it yet, and otherwise the
	// slow-start clock's reading when one first did, plus one.
	rampStart atomic.Int64
	// succeeded is whether the last request to finish on this address
	// (canceled ones aside) was a Success, for LastSucceeded.
	succeeded atomic.Bool
	// orca is the address's last load report, for
	// client_side_weighted_round_robin; it lives here, per address, so
	// that reports reach it through Finish and out-of-band streams
	// whatever layers wrap the policy.
	orca orcaState
}

// rampPending marks a Load whose address joined after the Cluster's first
// endpoint set and whose ramp has not started.
const rampPending = -1

// NewEndpoint returns an Endpoint for e with a fresh Load.
func NewEndpoint(e resolver.Endpoint) *Endpoint { return &Endpoint{Endpoint: e, load: new(Load)} }

// Now reads the monotonic clock policies and DoneInfo.End use, in
// nanoseconds from an arbitrary origin. Timing a request with two
// readings of it costs two clock reads, where time.Now and time.Since cost
// three.
func Now() int64 { return monoNow() }

// InFlight returns the number of requests picked for this endpoint that have
// not finished.
func (e *Endpoint) InFlight() int64 { return e.load.inFlight.Load() }

// Ejected reports whether outlier detection (see [NewOutlierDetection]) has
// currently ejected the endpoint's address. It is false when no detector
// watches the address. It is safe for concurrent use.
func (e *Endpoint) Ejected() bool {
	h := e.load.outlier.Load()
	return h != nil && h.ejected.Load()
}

// LastSucceeded reports whether the last request that finished on the
// endpoint's address, through PickResult.Finish, was a Success; requests
// the caller canceled do not count, and it is false before any finished.
// It lets a status page call an endpoint that discovery gives no health
// (static and DNS endpoints) healthy once it has shown that it serves. It
// is safe for concurrent use.
func (e *Endpoint) LastSucceeded() bool { return e.load.succeeded.Load() }

// Outcome classifies how a request ended, in the terms Envoy's retry and
// outlier-detection settings use.
type Outcome uint8

const (
	// Success: a response that is not a server error.
	Success Outcome = iota
	// ServerError: HTTP 5xx other than 502-504; gRPC INTERNAL, UNKNOWN,
	// DATA_LOSS.
	ServerError
	// GatewayError: HTTP 502, 503, 504; gRPC UNAVAILABLE.
	GatewayError
	// ConnectFailure: no connection could be made to the endpoint.
	ConnectFailure
	// Reset: the connection broke after the request was sent.
	Reset
	// Timeout: the request's deadline passed while waiting on the endpoint.
	Timeout
	// Canceled: the caller gave up; this says nothing about the endpoint.
	Canceled
)

var outcomeNames = [...]string{"success", "server_error", "gateway_error", "connect_failure", "reset", "timeout", "canceled"}

// String returns the outcome's snake_case name, as used in metrics.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", o)
}

// IsFailure reports whether the outcome counts against the endpoint.
func (o Outcome) IsFailure() bool { return o != Success && o != Canceled }

// DoneInfo is what the data path knows when a request finishes.
type DoneInfo struct {
	// Latency from the pick to the response headers (HTTP) or to the end of
	// the call (gRPC).
	Latency time.Duration
	// End, when not 0, is Now() as the request finished. A data path that
	// times requests with Now passes its second reading here, so that a
	// policy that needs the time, as p2c_ewma does, does not read the
	// clock again: a reading costs more than the rest of a pick.
	End     int64
	Outcome Outcome
	// Err is the transport error, if any.
	Err error
	// Ctx, when not nil, is the request's context: a change of state the
	// outcome causes (an outlier ejection) is reported with it, so that
	// its log line carries the request's trace. It is never used to
	// cancel anything.
	Ctx context.Context
	// Load, when not nil, is the backend's load report (ORCA) that came
	// with the response: a gRPC trailer endpoint-load-metrics-bin or an
	// HTTP header endpoint-load-metrics. Finish records it for the
	// endpoint's address.
	Load *LoadReport
}

// PickInfo describes the request being placed.
type PickInfo struct {
	Ctx context.Context
	// Hash is the request's hash from the route's hash policy, for
	// consistent-hashing policies; valid when HasHash is true.
	Hash    uint64
	HasHash bool
	// Header, when set, is the HTTP request's header, which ring_hash and
	// maglev hash when their settings name a requestHashHeader (gRFC
	// A76) and the request has no Hash. A gRPC call's metadata are read
	// from Ctx instead.
	Header http.Header
	// Tried, when set, reports the endpoints this request already tried;
	// Cluster.Pick then picks again, a few times, to send a retry to
	// another endpoint where one exists (Envoy's previous_hosts).
	Tried interface{ Tried(addr string) bool }
	// Override, when not empty, is the address a session names (a
	// session-affinity cookie, gRFC A55): Cluster.Pick returns that
	// endpoint, bypassing the policy, priorities and localities, as long
	// as it is in the endpoint set, its health serves, outlier detection
	// has not ejected it and Tried does not report it; otherwise the
	// policy picks as usual.
	Override string
}

// PickResult is a picked endpoint. The data path must call Finish exactly
// once when the request ends.
type PickResult struct {
	Endpoint *Endpoint
	// Done, when not nil, receives the request's outcome. Policies that
	// need no feedback leave it nil. It must not block.
	Done func(DoneInfo)
}

// Finish reports the request's outcome: it ends the request's in-flight
// count, counts the outcome for outlier detection when a detector watches
// the endpoint, and calls Done.
func (r PickResult) Finish(d DoneInfo) {
	r.Endpoint.load.inFlight.Add(-1)
	if d.Outcome != Canceled {
		// Written only on a change, so a serving endpoint's requests do
		// not all write this word.
		if ok := d.Outcome == Success; r.Endpoint.load.succeeded.Load() != ok {
			r.Endpoint.load.succeeded.Store(ok)
		}
	}
	if h := r.Endpoint.load.outlier.Load(); h != nil {
		h.record(d.Outcome, d.Ctx)
	}
	if d.Load != nil {
		now := d.End
		if now == 0 {
			now = monoNow()
		}
		r.Endpoint.load.orca.record(d.Load, now)
	}
	if r.Done != nil {
		r.Done(d)
	}
}

// Picker chooses an endpoint for one request. Pickers are immutable
// snapshots: Pick is called concurrently from every request goroutine, must
// not block and should not allocate.
type Picker interface {
	Pick(PickInfo) (PickResult, error)
}

// BuildOptions is what a Balancer is built with.
type BuildOptions struct {
	// UpdatePicker installs the picker the data path uses from now on. A
	// balancer calls it after each UpdateEndpoints and whenever its own
	// state changes the choice (an ejection, a weight ramp). Calls are
	// serialized by the balancer.
	UpdatePicker func(Picker)
	// Config is the policy's parsed configuration (from ConfigParser), or
	// nil for the policy's defaults.
	Config any
	// OnEjection, if set, is told each time outlier detection ejects an
	// endpoint (ejected true) or returns it, so the owner can say so in
	// its logs. ctx is the context of the request whose outcome caused an
	// ejection (DoneInfo.Ctx), context.Background() for a decision of the
	// periodic sweep (success rate, failure percentage, a return). It is
	// called under the balancer's lock: it must not block or call into the
	// balancer. Wrapping policies pass it down.
	OnEjection func(ctx context.Context, addr string, ejected bool)
}

// Balancer turns a service's endpoint sets into pickers.
// UpdateEndpoints and Close are never called concurrently.
type Balancer interface {
	// UpdateEndpoints hands over the complete endpoint set, including
	// endpoints whose Health says they must not serve.
	UpdateEndpoints([]*Endpoint)
	Close()
}

// Builder creates Balancers of one policy.
type Builder interface {
	// Name is the policy's registered name, such as "round_robin".
	Name() string
	Build(BuildOptions) Balancer
}

// ConfigParser is implemented by Builders whose policy takes settings, as
// JSON in the shape of grpc-go's load-balancing configuration.
type ConfigParser interface {
	ParseConfig(json.RawMessage) (any, error)
}

// PickerFunc builds a picker from the endpoints that may serve; it is never
// given an empty slice. It is how a stateless policy is written.
type PickerFunc func(serving []*Endpoint) Picker

// NewPickerBuilder returns a Builder for a policy whose picker depends only
// on the set of serving endpoints. When none may serve, the picker fails
// with ErrNoHealthyEndpoint.
func NewPickerBuilder(name string, build PickerFunc) Builder {
	return pickerBuilder{name: name, build: build}
}

type pickerBuilder struct {
	name  string
	build PickerFunc
}

func (b pickerBuilder) Name() string { return b.name }

func (b pickerBuilder) Build(opts BuildOptions) Balancer {
	return &pickerBalancer{build: b.build, update: opts.UpdatePicker}
}

type pickerBalancer struct {
	build  PickerFunc
	update func(Picker)
}

func (b *pickerBalancer) UpdateEndpoints(eps []*Endpoint) {
	serving := Serving(eps)
	if len(serving) == 0 {
		b.update(ErrPicker(ErrNoHealthyEndpoint))
		return
	}
	b.update(b.build(serving))
}

func (b *pickerBalancer) Close() {}

// Serving returns the endpoints whose health allows traffic, in order.
func Serving(eps []*Endpoint) []*Endpoint {
	out := make([]*Endpoint, 0, len(eps))
	for _, e := range eps {
		if e.Health.Serving() {
			out = append(out, e)
		}
	}
	return out
}

// ErrPicker returns a Picker whose every pick fails with err.
func ErrPicker(err error) Picker { return errPicker{err} }

type errPicker struct{ err error }

func (p errPicker) Pick(PickInfo) (PickResult, error) { return PickResult{}, p.err }

var (
	registryMu sync.RWMutex
	registry   = map[string]Builder{}
)

// Register makes a policy available by name to Weft's data paths and, as
// "weft_" + name, to grpc-go. Call it from an init function; a second
// registration of a name replaces the first.
func Register(b Builder) {
	registryMu.Lock()
	registry[b.Name()] = b
	registryMu.Unlock()
	registerGRPC(b)
}

// Get returns the policy registered under name, or nil.
func Get(name string) Builder {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return registry[name]
}

// Names returns the registered policy names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// retryPickAttempts bounds the extra picks spent looking for an endpoint a
// retry has not tried; past it, the retry goes where the policy says.
const retryPickAttempts = 3

// Cluster is one service's balancing state for a data path. It reuses an
// Endpoint per address across updates and holds the current Picker.
// Its methods are safe for concurrent use; Pick is lock-free.
type Cluster struct {
	picker atomic.Pointer[pickerBox]

	// addrs is byAddr as of the last Update, for lock-free overrides.
	addrs atomic.Pointer[map[string]*Endpoint]

	mu        sync.Mutex // serializes updates into the balancer
	bal       Balancer
	endpoints []*Endpoint
	byAddr    map[string]*Endpoint
	onPicker  func(Picker)
	onEject   func(ctx context.Context, addr string, ejected bool)
	closed    bool
	// seeded is set by the first Update with endpoints: addresses that
	// appear after it are new, for slow start.
	seeded bool
}

type pickerBox struct{ p Picker }

// ClusterOption configures NewCluster.
type ClusterOption func(*Cluster)

// OnPicker registers f to be called with each new picker, after the
// Cluster has installed it; gRPC's adapter uses it to refresh its channel.
func OnPicker(f func(Picker)) ClusterOption { return func(c *Cluster) { c.onPicker = f } }

// OnEjection registers f to be told of outlier ejections and returns
// (BuildOptions.OnEjection), so the mesh can log them with the cluster.
func OnEjection(f func(ctx context.Context, addr string, ejected bool)) ClusterOption {
	return func(c *Cluster) { c.onEject = f }
}

// NewCluster returns a Cluster balancing with policy b and its parsed
// config (nil for defaults). Until the first Update, picks fail with
// ErrNoHealthyEndpoint.
func NewCluster(b Builder, config any, opts ...ClusterOption) *Cluster {
	c := &Cluster{byAddr: map[string]*Endpoint{}}
	for _, o := range opts {
		o(c)
	}
	c.picker.Store(&pickerBox{ErrPicker(ErrNoHealthyEndpoint)})
	c.bal = b.Build(BuildOptions{UpdatePicker: c.setPicker, Config: config, OnEjection: c.onEject})
	return c
}

func (c *Cluster) setPicker(p Picker) {
	c.picker.Store(&pickerBox{p})
	if c.onPicker != nil {
		c.onPicker(p)
	}
}

// Update replaces the endpoint set. Endpoints keep their identity (and so
// their in-flight count) across updates by address.
func (c *Cluster) Update(eps []resolver.Endpoint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	next := make([]*Endpoint, 0, len(eps))
	byAddr := make(map[string]*Endpoint, len(eps))
	for _, e := range eps {
		if _, dup := byAddr[e.Addr]; dup {
			continue // one address is one endpoint
		}
		ep := c.byAddr[e.Addr]
		if ep == nil {
			ep = NewEndpoint(e)
			if c.seeded {
				ep.load.rampStart.Store(rampPending)
			}
		} else if ep.Endpoint != e {
			// Its discovery data changed: a new value, since pickers may
			// still read the old one, sharing the Load.
			ep = &Endpoint{Endpoint: e, load: ep.load}
		}
		byAddr[e.Addr] = ep
		next = append(next, ep)
	}
	c.endpoints, c.byAddr = next, byAddr
	c.seeded = c.seeded || len(next) > 0
	c.addrs.Store(&byAddr)
	c.bal.UpdateEndpoints(slices.Clone(next))
}

// Endpoints returns the current endpoint set.
func (c *Cluster) Endpoints() []*Endpoint {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.endpoints)
}

// Pick picks an endpoint and counts the request as in flight on it until
// the result's Finish is called.
func (c *Cluster) Pick(info PickInfo) (PickResult, error) {
	if info.Override != "" {
		if e := c.override(info); e != nil {
			e.load.inFlight.Add(1)
			return PickResult{Endpoint: e}, nil
		}
	}
	p := c.picker.Load().p
	res, err := p.Pick(info)
	if err != nil {
		return PickResult{}, err
	}
	if info.Tried != nil && info.Tried.Tried(res.Endpoint.Addr) {
		for i := 0; i < retryPickAttempts && info.Tried.Tried(res.Endpoint.Addr); i++ {
			again, err := p.Pick(info)
			if err != nil {
				break
			}
			res = again
		}
		if info.Tried.Tried(res.Endpoint.Addr) {
			if e := c.untried(p, res.Endpoint, info.Tried, nil); e != nil {
				res = PickResult{Endpoint: e}
			}
		}
	}
	res.Endpoint.load.inFlight.Add(1)
	return res, nil
}

// scopedPicker is a Picker that chooses among priorities before it picks
// an endpoint, as NewPriorityLocality's does.
type scopedPicker interface {
	// retryScope returns the endpoints a pick that chose priority prio
	// may reach (those of prio's localities that receive traffic), or
	// nil when prio receives none. The slice is the picker's: read only.
	retryScope(prio uint32) []*Endpoint
}

// untried returns an endpoint that may serve, that tried does not report
// and that ok, when not nil, accepts, or nil. It is the last resort of a
// pick for a retry or hedge whose policy kept drawing endpoints already
// tried (with two endpoints, four draws all land on the tried one 1 time
// in 16): going elsewhere matters more than the policy's preference then,
// but only among the endpoints the policy could have picked in the
// priority it chose for last, the pick's priority. Envoy's retries keep
// the balancer's priority load (retry_priority aside, which Weft does not
// apply): when previous_hosts finds no other host there, the retry goes
// back to a tried one rather than to a priority the load gives nothing.
// A picker without priorities (a bare policy) may reach every endpoint.
func (c *Cluster) untried(p Picker, picked *Endpoint, tried interface{ Tried(addr string) bool }, ok func(*Endpoint) bool) *Endpoint {
	fits := func(e *Endpoint) bool {
		return e.Health.Serving() && !e.Ejected() && !tried.Tried(e.Addr) && (ok == nil || ok(e))
	}
	if sp, isScoped := p.(scopedPicker); isScoped {
		eps := sp.retryScope(picked.Priority)
		if len(eps) == 0 {
			return nil
		}
		// Start at a random place, so the fallback spreads over the
		// priority's untried endpoints rather than always taking the
		// first.
		off := rand.IntN(len(eps))
		for i := range eps {
			if e := eps[(off+i)%len(eps)]; fits(e) {
				return e
			}
		}
		return nil
	}
	m := c.addrs.Load()
	if m == nil {
		return nil
	}
	for _, e := range *m {
		if fits(e) {
			return e
		}
	}
	return nil
}

// override returns the endpoint info.Override names when it may take the
// request, else nil.
func (c *Cluster) override(info PickInfo) *Endpoint {
	m := c.addrs.Load()
	if m == nil {
		return nil
	}
	e := (*m)[info.Override]
	if e == nil || !e.Health.Serving() || e.Ejected() {
		return nil
	}
	if info.Tried != nil && info.Tried.Tried(e.Addr) {
		return nil // a retry of a failed attempt goes elsewhere
	}
	return e
}

// Close releases the balancer; later picks keep the last picker.
func (c *Cluster) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.closed = true
		c.bal.Close()
	}
}
