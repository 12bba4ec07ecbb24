package xds

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/google"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"
)

// Defaults of the client's options.
const (
	// DefaultResourceTimeout is how long a subscribed resource may go
	// unanswered before it is reported as not existing (gRFC A27).
	DefaultResourceTimeout = 15 * time.Second
	// DefaultMaxRecvMsgSize is the largest DiscoveryResponse accepted.
	// gRPC's default of 4 MiB is too small for a state-of-the-world
	// response in a large mesh (every cluster, or every endpoint of a
	// large service, in one message): a response over the limit fails the
	// stream again at every reconnection, and the mesh would never sync.
	// The control plane is trusted; the limit only bounds a runaway one.
	DefaultMaxRecvMsgSize = 128 << 20
)

// Re-NACK pacing: a control plane that answers every NACK with the same
// rejected version (go-control-plane does) would otherwise keep the client
// busy re-rejecting it.
const (
	nackDelayBase = 100 * time.Millisecond
	nackDelayMax  = 2 * time.Second
)

// Watcher receives the state of one watched resource. Calls to all watchers
// of a Client are serialized and in order, and never made under the
// client's locks, so a watcher may call Watch or a cancel func; a watcher
// must not block for long, because it holds up every other watcher.
type Watcher interface {
	// OnUpdate delivers a new version of the resource.
	OnUpdate(Resource)
	// OnError reports that the resource was rejected (NACKed) or that the
	// control plane is unreachable while no version of it is known. A
	// version delivered earlier stays valid: the data path keeps using it.
	OnError(error)
	// OnDoesNotExist reports that the control plane says the resource
	// does not exist, or did not send it within the resource timeout.
	OnDoesNotExist()
}

// Option configures a Client.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	dialOpts        []grpc.DialOption
	resourceTimeout time.Duration
	maxRecvMsgSize  int
	newBackoff      func() backoff.BackOff
	clock           clock
	delta           bool
	events          func(Event)
}

// WithDialOptions adds grpc.DialOptions used to reach the management
// servers, after the credentials the bootstrap selects.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(c *config) { c.dialOpts = append(c.dialOpts, opts...) })
}

// WithResourceTimeout sets the does-not-exist timeout; d <= 0 keeps
// DefaultResourceTimeout.
func WithResourceTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.resourceTimeout = d
		}
	})
}

// WithMaxRecvMsgSize sets the largest response accepted; n <= 0 keeps
// DefaultMaxRecvMsgSize. A larger response fails the stream, which is then
// retried with backoff.
func WithMaxRecvMsgSize(n int) Option {
	return optionFunc(func(c *config) {
		if n > 0 {
			c.maxRecvMsgSize = n
		}
	})
}

// WithBackoff sets the reconnect backoff; nil keeps the default
// (exponential from 1 s to 120 s, factor 1.6, jitter 0.2, as gRPC
// connection backoff). The function is called once per client.
func WithBackoff(f func() backoff.BackOff) Option {
	return optionFunc(func(c *config) {
		if f != nil {
			c.newBackoff = f
		}
	})
}

// WithDelta makes the client speak incremental xDS
// (DeltaAggregatedResources) instead of state of the world: each response
// carries only the resources that changed and the names of those removed,
// so a client watching n resources of a type is not resent all n whenever
// one changes or one more is watched. The server must implement it.
func WithDelta() Option { return optionFunc(func(c *config) { c.delta = true }) }

func withClock(cl clock) Option { return optionFunc(func(c *config) { c.clock = cl }) }

// ResourceState is where a watched resource stands.
type ResourceState string

// Resource states, as in a config dump (gRFC A40).
const (
	StateRequested    ResourceState = "REQUESTED"
	StateACKed        ResourceState = "ACKED"
	StateNACKed       ResourceState = "NACKED"
	StateDoesNotExist ResourceState = "DOES_NOT_EXIST"
)

// ResourceStatus is one entry of a config dump.
type ResourceStatus struct {
	Type  ResourceType
	Name  string
	State ResourceState
	// Version is the version the current Resource was accepted at.
	Version string
	// Resource is the version in use, nil if none.
	Resource Resource
	// Error is why the latest version was rejected, "" if it was not.
	Error string
	// Unapplied lists fields of Resource that Weft does not apply.
	Unapplied []string
}

// Client is an xDS client keeping one ADS stream (state of the world, or
// incremental with WithDelta) to the first reachable management server of
// a bootstrap, and one more for each federation authority whose servers
// differ (gRFC A47). It is safe for concurrent use; Close releases
// everything it started.
type Client struct {
	cfg     config
	servers []ServerConfig
	// serversKey identifies servers; authorities are the bootstrap's
	// (nil on an authority's own client, whose parent routes to it).
	serversKey  string
	authorities map[string]Authority
	parent      *Client
	// fedMu guards federated: the clients of authorities with servers of
	// their own, by serversKey, started on first use.
	fedMu     sync.Mutex
	federated map[string]*Client
	fedClosed bool
	node      *corev3.Node
	conns     []*grpc.ClientConn
	seed      maphash.Seed
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	ser       *serializer
	// wake tells the send loop that a type is dirty; subWake tells the
	// run loop, idle until something is watched, to connect.
	wake    chan struct{}
	subWake chan struct{}

	mu        sync.Mutex
	closed    bool
	resources [numTypes]map[string]*resourceState
	versions  [numTypes]string
	nonces    [numTypes]string
	// sentNames and outstanding tell which response answers the latest
	// change of subscriptions: a server replies once to each request that
	// changes the names it asks for, in order, and not to a bare ACK.
	sentNames   [numTypes][]string
	outstanding [numTypes]int
	last        [numTypes]lastResponse
	dirty       [numTypes]bool
	nackErr     [numTypes]string
	nackTimer   [numTypes]timer
	// deltaSent is, with WithDelta, what the server was told each type
	// subscribes to on the current stream; nil until the stream's first
	// request of the type.
	deltaSent [numTypes]map[string]*resourceState
	// subEpoch counts resources added to each type's subscriptions: a
	// resent response is skipped only if no resource was added since, or
	// a server that sends unrequested resources would starve a new
	// watcher of one it already sent.
	subEpoch [numTypes]uint64
	// streamGen counts streams; timers armed for an older stream do
	// nothing when they fire.
	streamGen      uint64
	ignoreDeletion bool
	nextWatcherID  uint64
	// conn is the connection's state; reported, each type's version last
	// told to the events function.
	conn     Connection
	connGen  uint64 // the stream conn last counted as connected
	reported [numTypes]reportedVersion

	// decodeMu guards decoded: each type's resources of the last response,
	// by their bytes' hash. A state-of-the-world server resends every
	// resource of a type whenever the names asked for change, so a client
	// that subscribes to n clusters one by one receives n(n+1)/2
	// resources; decoding only the ones whose bytes are new keeps that
	// from being n²/2 translations.
	decodeMu sync.Mutex
	decoded  [numTypes]map[uint64]decodedBytes

	// activeServer is the index in conns of the server the ADS stream
	// uses (or last tried): the one lrs_server self names.
	activeServer atomic.Int32
	lrs          lrsState
}

// decodedBytes is one resource's bytes and what Decode made of them.
type decodedBytes struct {
	typeURL string
	raw     []byte
	decoded
}

type resourceState struct {
	watchers map[uint64]*watcherEntry
	res      Resource
	raw      []byte // bytes of res's proto, to skip unchanged resends
	version  string // the response's, or with WithDelta the resource's own
	// updated is when res last changed (Envoy's last_updated).
	updated time.Time
	dne     bool
	err     error
	// failed is the latest version rejected, for the config dump's
	// error_state; nil once a version is accepted. Its bytes are the
	// response's, which the decoding cache holds anyway.
	failed   *failedUpdate
	dneTimer timer
	// idle is set when the last watcher left. The name stays subscribed
	// until the next request that adds a name (see sendLoop), and its
	// state keeps following the server, so a new watcher gets it at once.
	idle bool
}

// failedUpdate is a rejected version of a resource, as received.
type failedUpdate struct {
	raw     []byte
	version string
	at      time.Time
}

type watcherEntry struct {
	w        Watcher
	canceled atomic.Bool
}

type lastResponse struct {
	valid     bool
	digest    uint64
	nacked    bool
	errDetail string
	nackDelay time.Duration
	epoch     uint64
}

// New starts a client for the servers of b. It does not connect until the
// first Watch. Resources named xdstp://<authority>/... go to the servers of
// that authority in b.Authorities (gRFC A47), on a stream of their own
// when the authority lists servers other than b.Servers. The client must
// be closed.
func New(b *Bootstrap, opts ...Option) (*Client, error) {
	if b == nil || len(b.Servers) == 0 {
		return nil, errors.New("xds: bootstrap has no xds_servers")
	}
	cfg := config{resourceTimeout: DefaultResourceTimeout, maxRecvMsgSize: DefaultMaxRecvMsgSize, clock: realClock{}}
	for _, o := range opts {
		o.apply(&cfg)
	}
	if cfg.newBackoff == nil {
		cl := cfg.clock
		cfg.newBackoff = func() backoff.BackOff {
			eb := backoff.NewExponentialBackOff()
			eb.InitialInterval, eb.Multiplier, eb.RandomizationFactor = time.Second, 1.6, 0.2
			eb.MaxInterval, eb.MaxElapsedTime = 120*time.Second, 0
			eb.Clock = cl
			eb.Reset()
			return eb
		}
	}
	// Check every authority's servers now: a bootstrap naming one that
	// cannot be dialled is refused at start, not at its first resource.
	for name, a := range b.Authorities {
		if err := checkServers(a.Servers, cfg.clock); err != nil {
			return nil, fmt.Errorf("xds: authorities[%q]: %w", name, err)
		}
	}
	c, err := newClient(cfg, b.Servers, b.Node.Proto(), nil)
	if err != nil {
		return nil, err
	}
	c.authorities = b.Authorities
	if c.authorities == nil {
		c.authorities = map[string]Authority{}
	}
	return c, nil
}

// checkServers checks that each server's channel credentials are usable.
func checkServers(servers []ServerConfig, cl clock) error {
	for i, s := range servers {
		if _, err := channelCreds(s, cl); err != nil {
			return fmt.Errorf("xds_servers[%d]: %w", i, err)
		}
	}
	return nil
}

// channelCreds returns the transport credentials a server's channel_creds
// select. A "tls" entry with a config reads its files now: one that
// cannot be read or parsed is an error naming the field and the file.
func channelCreds(s ServerConfig, cl clock) (credentials.TransportCredentials, error) {
	switch s.CredsType {
	case CredsInsecure:
		return insecure.NewCredentials(), nil
	case CredsTLS:
		if s.CredsConfig == nil {
			return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12}), nil
		}
		files, err := parseTLSConfig("channel_creds (tls).config", s.CredsConfig)
		if err != nil {
			return nil, err
		}
		src, err := newFileSource(files, cl)
		if err != nil {
			return nil, fmt.Errorf("channel_creds (tls).config.%w", err)
		}
		return &fileCreds{src: src}, nil
	case CredsGoogleDefault:
		return google.NewDefaultCredentials().TransportCredentials(), nil
	}
	return nil, fmt.Errorf("unsupported channel creds %q", s.CredsType)
}

// newClient starts a client of one list of servers. ser, when non-nil, is
// the serializer of the client whose authority this one serves, so that
// every watcher call of a Client stays serialized.
func newClient(cfg config, servers []ServerConfig, node *corev3.Node, ser *serializer) (*Client, error) {
	c := &Client{cfg: cfg, servers: servers, serversKey: serversKey(servers), node: node, seed: maphash.MakeSeed(),
		done: make(chan struct{}), wake: make(chan struct{}, 1), subWake: make(chan struct{}, 1)}
	for i := range c.resources {
		c.resources[i] = make(map[string]*resourceState)
	}
	for i, s := range servers {
		tc, err := channelCreds(s, cfg.clock)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("xds: xds_servers[%d]: %w", i, err)
		}
		dopts := append([]grpc.DialOption{
			grpc.WithTransportCredentials(tc),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(cfg.maxRecvMsgSize)),
		}, cfg.dialOpts...)
		cc, err := grpc.NewClient(s.URI, dopts...)
		if err != nil {
			c.closeConns()
			return nil, fmt.Errorf("xds: xds_servers[%d].server_uri %q: %w", i, s.URI, err)
		}
		c.conns = append(c.conns, cc)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ser = ser
	if ser == nil {
		c.ser = newSerializer()
	}
	go c.run()
	return c, nil
}

func (c *Client) closeConns() {
	for _, cc := range c.conns {
		cc.Close()
	}
}

// Close stops the stream, the timers and the callbacks. No watcher is
// called after Close returns. It is idempotent. It waits for a running
// watcher callback to return, so a watcher must not call it.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.stopTimersLocked()
	for _, t := range c.nackTimer {
		if t != nil {
			t.Stop()
		}
	}
	c.mu.Unlock()
	c.fedMu.Lock()
	c.fedClosed = true
	subs := c.federated
	c.federated = nil
	c.fedMu.Unlock()
	for _, sub := range subs {
		sub.Close()
	}
	c.cancel()
	<-c.done
	c.stopLRS()
	if c.parent == nil {
		c.ser.close() // an authority's client shares its parent's
	}
	c.closeConns()
	return nil
}

func (c *Client) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Watch subscribes to the resource of type t named name and reports it to
// w: at once if it is cached, then on every change. The subscription is
// opened on demand and dropped when the last watcher of the resource
// cancels. After cancel returns, no new call to w starts. Watch on a
// closed client does nothing and returns a no-op cancel.
func (c *Client) Watch(t ResourceType, name string, w Watcher) (cancel func()) {
	if t < 0 || t >= numTypes {
		panic(fmt.Sprintf("xds: Watch: unknown resource type %d", t))
	}
	if IsXDSTP(name) {
		target, canonical, err := c.route(name)
		if err != nil {
			c.mu.Lock()
			if !c.closed {
				we := &watcherEntry{w: w}
				c.ser.schedule(func() { deliver(we, func(w Watcher) { w.OnError(err) }) })
				c.mu.Unlock()
				return func() { we.canceled.Store(true) }
			}
			c.mu.Unlock()
			return func() {}
		}
		if target != c {
			return target.Watch(t, canonical, w)
		}
		name = canonical
	}
	we := &watcherEntry{w: w}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return func() {}
	}
	rs := c.resources[t][name]
	if rs != nil && rs.idle {
		// Still subscribed: the state is current, nothing to ask for.
		rs.idle = false
	}
	if rs == nil {
		rs = &resourceState{watchers: make(map[uint64]*watcherEntry)}
		c.resources[t][name] = rs
		c.subEpoch[t]++
		c.dirty[t] = true
		defer func() {
			c.signal()
			select {
			case c.subWake <- struct{}{}:
			default:
			}
		}()
	}
	id := c.nextWatcherID
	c.nextWatcherID++
	rs.watchers[id] = we
	switch {
	case rs.res != nil:
		r := rs.res
		c.ser.schedule(func() { deliver(we, func(w Watcher) { w.OnUpdate(r) }) })
	case rs.dne:
		c.ser.schedule(func() { deliver(we, Watcher.OnDoesNotExist) })
	case rs.err != nil:
		err := rs.err
		c.ser.schedule(func() { deliver(we, func(w Watcher) { w.OnError(err) }) })
	}
	c.mu.Unlock()
	return sync.OnceFunc(func() {
		we.canceled.Store(true)
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(rs.watchers, id)
		if len(rs.watchers) > 0 || c.resources[t][name] != rs {
			return
		}
		if c.cfg.delta {
			// Incremental xDS unsubscribes by name and awaits no reply:
			// the name leaves at once.
			if rs.dneTimer != nil {
				rs.dneTimer.Stop()
			}
			delete(c.resources[t], name)
			if !c.closed {
				c.dirty[t] = true
				c.signal()
			}
			return
		}
		// The name leaves the subscription with the next request that
		// adds one, not in a request of its own: a state-of-the-world
		// server need not answer a request that only removes names (and
		// go-control-plane does not), so such a request would leave the
		// client unable to tell which response answers its next
		// subscription, and every does-not-exist decision after it would
		// wait for its timer.
		rs.idle = true
	})
}

func deliver(we *watcherEntry, f func(Watcher)) {
	if !we.canceled.Load() {
		f(we.w)
	}
}

// notifyLocked schedules f for every watcher of rs.
func (c *Client) notifyLocked(rs *resourceState, f func(Watcher)) {
	for _, we := range rs.watchers {
		c.ser.schedule(func() { deliver(we, f) })
	}
}

// Dump returns the state of every watched resource, of every authority's
// stream, sorted by type and name.
func (c *Client) Dump() []ResourceStatus {
	out := c.dumpOwn()
	c.fedMu.Lock()
	subs := make([]*Client, 0, len(c.federated))
	for _, sub := range c.federated {
		subs = append(subs, sub)
	}
	c.fedMu.Unlock()
	for _, sub := range subs {
		out = append(out, sub.dumpOwn()...)
	}
	slices.SortFunc(out, func(a, b ResourceStatus) int {
		if a.Type != b.Type {
			return int(a.Type) - int(b.Type)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// dumpOwn returns the states of the resources of c's own stream.
func (c *Client) dumpOwn() []ResourceStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []ResourceStatus
	for t := range numTypes {
		for name, rs := range c.resources[t] {
			if rs.idle {
				continue // no longer watched, only not yet unsubscribed
			}
			s := ResourceStatus{Type: t, Name: name, Version: rs.version, Resource: rs.res, State: StateRequested}
			switch {
			case rs.err != nil:
				s.State, s.Error = StateNACKed, rs.err.Error()
			case rs.dne:
				s.State = StateDoesNotExist
			case rs.res != nil:
				s.State = StateACKed
			}
			if rs.res != nil {
				s.Unapplied = rs.res.UnappliedFields()
			}
			out = append(out, s)
		}
	}
	return out
}

// run keeps a stream up until Close: it tries the servers in order (the
// primary first, then fallbacks, gRFC A71) and waits a jittered
// exponential backoff between failed rounds, reset by any response.
func (c *Client) run() {
	defer close(c.done)
	bo := c.cfg.newBackoff()
	for c.ctx.Err() == nil {
		if !c.hasSubscriptions() {
			// Connect only once something is watched.
			select {
			case <-c.ctx.Done():
				return
			case <-c.subWake:
				continue
			}
		}
		received, err := c.connectOnce()
		if c.ctx.Err() != nil {
			return
		}
		if received {
			bo.Reset()
		}
		c.connFailed(received, err)
		c.streamFailed(err)
		if !c.cfg.waitBackoff(c.ctx, bo) {
			return
		}
	}
}

func (c *Client) hasSubscriptions() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for t := range numTypes {
		for _, rs := range c.resources[t] {
			if !rs.idle {
				return true
			}
		}
	}
	return false
}

func (c *Client) connectOnce() (received bool, err error) {
	var errs []error
	for i, cc := range c.conns {
		c.trying(c.servers[i])
		c.activeServer.Store(int32(i))
		ctx, cancel := context.WithCancel(c.ctx)
		run, err := c.openStream(ctx, cancel, cc, c.servers[i])
		if err != nil {
			cancel()
			errs = append(errs, fmt.Errorf("xds: ADS stream to %s: %w", c.servers[i].URI, err))
			continue
		}
		var wg sync.WaitGroup
		if i > 0 {
			// gRFC A71: on a fallback server, return to the primary as
			// soon as it is reachable again.
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.awaitPrimary(ctx, cancel)
			}()
		}
		received, err := run()
		wg.Wait()
		return received, fmt.Errorf("xds: ADS stream to %s: %w", c.servers[i].URI, err)
	}
	return false, errors.Join(errs...)
}

// awaitPrimary ends the current stream (through cancel) when the primary
// server's channel becomes ready; it returns when ctx ends. Each turn of
// its loop waits for a state change, so it never spins.
func (c *Client) awaitPrimary(ctx context.Context, cancel context.CancelFunc) {
	cc := c.conns[0]
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			cancel()
			return
		case connectivity.Idle:
			cc.Connect()
		}
		if !cc.WaitForStateChange(ctx, s) {
			return
		}
	}
}

type adsStream = grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]

// openStream opens an ADS stream, incremental with WithDelta, and returns
// the function that runs it until it fails.
func (c *Client) openStream(ctx context.Context, cancel context.CancelFunc, cc *grpc.ClientConn, srv ServerConfig) (run func() (bool, error), err error) {
	ads := discoveryv3.NewAggregatedDiscoveryServiceClient(cc)
	if c.cfg.delta {
		stream, err := ads.DeltaAggregatedResources(ctx)
		if err != nil {
			return nil, err
		}
		return func() (bool, error) { return c.runDeltaStream(ctx, cancel, stream, srv) }, nil
	}
	stream, err := ads.StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return func() (bool, error) { return c.runStream(ctx, cancel, stream, srv) }, nil
}

// beginStream resets the per-stream state for a new stream to srv, marks
// every subscribed type for sending and returns the stream's generation.
func (c *Client) beginStream(srv ServerConfig) uint64 {
	c.mu.Lock()
	c.streamGen++
	gen := c.streamGen
	c.ignoreDeletion = srv.IgnoreResourceDeletion()
	for t := range numTypes {
		c.nonces[t] = ""
		c.sentNames[t], c.outstanding[t] = nil, 0
		c.deltaSent[t] = nil
		c.last[t] = lastResponse{}
		c.nackErr[t] = ""
		c.purgeIdleLocked(t) // a new stream asks only for what is watched
		if len(c.resources[t]) > 0 {
			c.dirty[t] = true
		}
	}
	c.mu.Unlock()
	c.signal()
	return gen
}

func (c *Client) runStream(ctx context.Context, cancel context.CancelFunc, stream adsStream, srv ServerConfig) (received bool, err error) {
	gen := c.beginStream(srv)
	first := true
	defer c.upAfter(srv, gen)()
	return runADS(cancel, func() error { return c.sendLoop(ctx, stream, gen) }, stream.Recv,
		func(resp *discoveryv3.DiscoveryResponse) {
			if first {
				first = false
				c.streamAnswered(srv, gen)
			}
			c.handleResponse(resp, gen)
		})
}

// runADS runs one stream, of either protocol, until it fails: send runs on
// its own goroutine, stopped by cancel, and each response is handled in
// the order it arrives. received reports whether any response came.
func runADS[Resp any](cancel context.CancelFunc, send func() error, recv func() (Resp, error), handle func(Resp)) (received bool, err error) {
	sendDone := make(chan error, 1)
	go func() { sendDone <- send() }()
	defer func() {
		cancel()
		<-sendDone
	}()
	for {
		resp, err := recv()
		if err != nil {
			return received, err
		}
		received = true
		handle(resp)
	}
}

// sendLoop sends a request for every type whose subscriptions, ACK or NACK
// changed, until the stream's context ends.
func (c *Client) sendLoop(ctx context.Context, stream adsStream, gen uint64) error {
	return runSendLoop(ctx, c, gen, func(t ResourceType) (*discoveryv3.DiscoveryRequest, bool) { return c.requestLocked(t), false },
		func(r *discoveryv3.DiscoveryRequest) { r.Node = c.node }, (*discoveryv3.DiscoveryRequest).GetResourceNames, stream.Send)
}

// requestLocked builds type t's next state-of-the-world request: every
// name watched, the version and nonce to ACK, and the NACK if any.
func (c *Client) requestLocked(t ResourceType) *discoveryv3.DiscoveryRequest {
	if c.addsLocked(t) {
		c.purgeIdleLocked(t) // the removals ride with the addition
	}
	names := make([]string, 0, len(c.resources[t]))
	for n := range c.resources[t] {
		names = append(names, n)
	}
	slices.Sort(names)
	if !slices.Equal(names, c.sentNames[t]) {
		c.sentNames[t] = names
		c.outstanding[t]++
	}
	req := &discoveryv3.DiscoveryRequest{TypeUrl: t.TypeURL(), VersionInfo: c.versions[t], ResponseNonce: c.nonces[t], ResourceNames: names}
	if e := c.nackErr[t]; e != "" {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: e}
		c.nackErr[t] = ""
	}
	return req
}

// runSendLoop is both protocols' send loop. Each time the client is woken,
// build makes, under c.mu, the request of every dirty type (nil when there
// is nothing to send; again asks for one more round). They are sent in
// order, the stream's first with the node (setNode), and the
// does-not-exist timers of the names each asked for (asked) start then:
// only now has the server been asked.
func runSendLoop[Req interface {
	comparable
	GetTypeUrl() string
}](ctx context.Context, c *Client, gen uint64, build func(ResourceType) (req Req, again bool),
	setNode func(Req), asked func(Req) []string, send func(Req) error) error {
	var none Req
	first := true
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
		}
		c.mu.Lock()
		var reqs []Req
		again := false
		for t := range numTypes {
			if !c.dirty[t] {
				continue
			}
			c.dirty[t] = false
			req, more := build(t)
			if more {
				c.dirty[t], again = true, true
			}
			if req != none {
				reqs = append(reqs, req)
			}
		}
		c.mu.Unlock()
		if again {
			c.signal()
		}
		for _, req := range reqs {
			if first {
				setNode(req)
				first = false
			}
			if err := send(req); err != nil {
				return err
			}
			c.armTimersFor(typeOf(req.GetTypeUrl()), asked(req), gen)
		}
	}
}

// armTimersFor starts the does-not-exist timer of each of names, of type
// t, that has no version yet and no timer.
func (c *Client) armTimersFor(t ResourceType, names []string, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streamGen != gen || c.closed {
		return
	}
	for _, name := range names {
		rs := c.resources[t][name]
		if rs == nil {
			continue
		}
		if rs.res != nil || rs.dne || rs.dneTimer != nil {
			continue
		}
		rs.dneTimer = c.cfg.clock.AfterFunc(c.cfg.resourceTimeout, func() { c.resourceTimedOut(t, name, rs, gen) })
	}
}

func (c *Client) resourceTimedOut(t ResourceType, name string, rs *resourceState, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.streamGen != gen || c.resources[t][name] != rs || rs.dneTimer == nil || rs.res != nil {
		return
	}
	rs.dneTimer = nil
	rs.dne = true
	c.notifyLocked(rs, Watcher.OnDoesNotExist)
}

func typeOf(url string) ResourceType {
	for t := range numTypes {
		if t.TypeURL() == url {
			return t
		}
	}
	return numTypes
}

// streamFailed stops the does-not-exist timers (a resource is not missing
// because the server is away) and reports err to watchers that have no
// version to keep serving (gRFC A57).
func (c *Client) streamFailed(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopTimersLocked()
	if err == nil {
		return
	}
	for t := range numTypes {
		for _, rs := range c.resources[t] {
			if rs.res == nil && !rs.dne {
				c.notifyLocked(rs, func(w Watcher) { w.OnError(err) })
			}
		}
	}
}

func (c *Client) stopTimersLocked() {
	for t := range numTypes {
		for _, rs := range c.resources[t] {
			if rs.dneTimer != nil {
				rs.dneTimer.Stop()
				rs.dneTimer = nil
			}
		}
	}
}

type decoded struct {
	name string
	res  Resource
	raw  []byte
	err  error
}

// decode decodes a response's resources of type t, reusing what the
// previous response's identical bytes decoded to; hashes are the
// resources' hashes of their bytes and type URL.
func (c *Client) decode(t ResourceType, as []*anypb.Any, hashes []uint64) []decoded {
	c.decodeMu.Lock()
	defer c.decodeMu.Unlock()
	prev := c.decoded[t]
	next := make(map[uint64]decodedBytes, len(as))
	out := make([]decoded, len(as))
	for i, a := range as {
		h := hashes[i]
		if p, ok := prev[h]; ok && p.typeURL == a.GetTypeUrl() && string(p.raw) == string(a.GetValue()) {
			// Keep the earlier bytes: the resource's state holds them
			// already, so the new response's copy can be collected.
			out[i], next[h] = p.decoded, p
			continue
		}
		name, r, err := Decode(t, a)
		name = canonicalName(name) // xdstp:// names as Watch stores them
		out[i] = decoded{name: name, res: r, raw: a.GetValue(), err: err}
		next[h] = decodedBytes{typeURL: a.GetTypeUrl(), raw: a.GetValue(), decoded: out[i]}
	}
	c.decoded[t] = next
	return out
}

// handleResponse applies a response and queues its ACK or NACK.
func (c *Client) handleResponse(resp *discoveryv3.DiscoveryResponse, gen uint64) {
	t := typeOf(resp.GetTypeUrl())
	if t == numTypes {
		return // a type never asked for; grpc-go ignores these too
	}
	// The digest ignores resource order: go-control-plane iterates a map,
	// so a resend of one version lists its resources in any order.
	digest := maphash.String(c.seed, resp.GetVersionInfo())
	hashes := make([]uint64, len(resp.GetResources()))
	for i, r := range resp.GetResources() {
		hashes[i] = maphash.Bytes(c.seed, r.GetValue()) ^ maphash.String(c.seed, r.GetTypeUrl())
		digest += hashes[i]
	}

	c.mu.Lock()
	if c.streamGen != gen {
		c.mu.Unlock()
		return
	}
	c.nonces[t] = resp.GetNonce()
	// replyToLatest: this response answers the last change of the names
	// asked for, so it reflects every name in that request.
	replyToLatest := false
	if c.outstanding[t] > 0 {
		c.outstanding[t]--
		replyToLatest = c.outstanding[t] == 0
	}
	if l := &c.last[t]; l.valid && l.digest == digest && l.epoch == c.subEpoch[t] {
		// The same version with the same bytes: nothing to apply again.
		if l.nacked {
			delay := l.nackDelay
			l.nackDelay = min(2*l.nackDelay, nackDelayMax)
			errDetail := l.errDetail
			if c.nackTimer[t] != nil {
				c.nackTimer[t].Stop()
			}
			c.nackTimer[t] = c.cfg.clock.AfterFunc(delay, func() {
				c.mu.Lock()
				if c.streamGen == gen && !c.closed {
					c.nackErr[t], c.dirty[t] = errDetail, true
				}
				c.mu.Unlock()
				c.signal()
			})
		} else {
			c.dirty[t] = true
			c.signal()
		}
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	// Decode outside the lock: a 10,000-endpoint assignment takes a while.
	res := c.decode(t, resp.GetResources(), hashes)
	seen := make(map[string]int, len(res))
	var dup string
	unnamed := false
	for i := range res {
		name := res[i].name
		if name == "" {
			unnamed = true
			continue
		}
		if _, ok := seen[name]; ok && dup == "" {
			dup = name
		}
		seen[name] = i
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streamGen != gen || c.closed {
		return
	}
	var errs []string
	if dup != "" {
		// Which copy is meant is unknowable: reject the whole response.
		errs = append(errs, fmt.Sprintf("xds: %s response version %q: resource %q appears more than once", t, resp.GetVersionInfo(), dup))
	} else {
		for _, d := range res {
			if d.err != nil {
				errs = append(errs, d.err.Error())
			}
			rs := c.resources[t][d.name]
			if rs == nil {
				continue // not subscribed (or a wildcard answer): ignore
			}
			if d.err != nil {
				// The resource exists, even if unusable: it is no longer
				// awaited.
				if rs.dneTimer != nil {
					rs.dneTimer.Stop()
					rs.dneTimer = nil
				}
				rs.err = d.err
				rs.failed = &failedUpdate{raw: d.raw, version: resp.GetVersionInfo(), at: c.cfg.clock.Now()}
				err := d.err
				c.notifyLocked(rs, func(w Watcher) { w.OnError(err) })
				continue
			}
			if rs.dneTimer != nil {
				rs.dneTimer.Stop()
				rs.dneTimer = nil
			}
			rs.err, rs.failed, rs.dne, rs.version = nil, nil, false, resp.GetVersionInfo()
			if rs.res != nil && string(rs.raw) == string(d.raw) {
				continue // unchanged: watchers already have it
			}
			rs.res, rs.raw, rs.updated = d.res, d.raw, c.cfg.clock.Now()
			r := d.res
			c.notifyLocked(rs, func(w Watcher) { w.OnUpdate(r) })
		}
		// In LDS and CDS every response is complete: a resource we had
		// that is missing now was deleted. A listener never received that
		// the answered request named (its does-not-exist timer is armed)
		// does not exist: deciding that at once, not after the 15 s timer,
		// lets the HTTP path pass a host that is not a mesh service
		// through after one round trip. Only the reply to the latest
		// change of names may decide it: an earlier reply crossing a new
		// subscription says nothing about the new name. That must still
		// hold now, after the decoding done outside the lock: a name
		// watched and sent meanwhile (outstanding is no longer 0) has an
		// armed timer too, and this response cannot have answered it.
		// Clusters keep grpc-go's timer.
		replyToLatest = replyToLatest && c.outstanding[t] == 0
		if t.allStateOfTheWorld() && !unnamed {
			for name, rs := range c.resources[t] {
				if _, ok := seen[name]; ok {
					continue
				}
				if rs.res == nil {
					if t == ListenerType && replyToLatest && rs.dneTimer != nil && !rs.dne {
						rs.dneTimer.Stop()
						rs.dneTimer, rs.dne = nil, true
						c.notifyLocked(rs, Watcher.OnDoesNotExist)
					}
					continue
				}
				if c.ignoreDeletion {
					continue // gRFC A53: keep serving the last version
				}
				rs.res, rs.raw, rs.err, rs.failed, rs.dne = nil, nil, nil, nil, true
				c.notifyLocked(rs, Watcher.OnDoesNotExist)
			}
		}
	}
	if c.nackTimer[t] != nil {
		c.nackTimer[t].Stop()
		c.nackTimer[t] = nil
	}
	c.nackErr[t] = ""
	l := &c.last[t]
	*l = lastResponse{valid: true, digest: digest, epoch: c.subEpoch[t]}
	if len(errs) > 0 {
		detail := strings.Join(errs, "; ")
		l.nacked, l.errDetail, l.nackDelay = true, detail, nackDelayBase
		c.nackErr[t] = detail
		c.respondedLocked(t, resp.GetVersionInfo(), len(res), errors.New(detail))
	} else {
		c.versions[t] = resp.GetVersionInfo()
		c.respondedLocked(t, resp.GetVersionInfo(), len(res), nil)
	}
	c.ackAfterDeliveryLocked(t, gen)
}

// ackAfterDeliveryLocked has the answer to a response of type t (its ACK
// or NACK) sent once the watchers have received what the response
// changed. Their callbacks run in order on the serializer, so the answer
// queued behind them leaves after them: an ACK then means the version is
// in use, as a control plane (or an operator reading its ACK) takes it.
// Before, the ACK could leave first, and a request sent just after it
// still met the previous endpoints.
func (c *Client) ackAfterDeliveryLocked(t ResourceType, gen uint64) {
	c.ser.schedule(func() {
		c.mu.Lock()
		if c.streamGen == gen && !c.closed {
			c.dirty[t] = true
		}
		c.mu.Unlock()
		c.signal()
	})
}

// addsLocked reports whether a watched name of type t is missing from
// the names last sent.
func (c *Client) addsLocked(t ResourceType) bool {
	for name, rs := range c.resources[t] {
		if _, ok := slices.BinarySearch(c.sentNames[t], name); !ok && !rs.idle {
			return true
		}
	}
	return false
}

// purgeIdleLocked drops the states of type t that no watcher holds.
func (c *Client) purgeIdleLocked(t ResourceType) {
	for name, rs := range c.resources[t] {
		if !rs.idle {
			continue
		}
		if rs.dneTimer != nil {
			rs.dneTimer.Stop()
		}
		delete(c.resources[t], name)
	}
}

// waitBackoff waits bo's next delay on the client's clock (120 s once bo
// stops), or until ctx ends: false then. The ADS and LRS streams reconnect
// through it.
func (cfg *config) waitBackoff(ctx context.Context, bo backoff.BackOff) bool {
	d := bo.NextBackOff()
	if d == backoff.Stop {
		d = 120 * time.Second
	}
	fired := make(chan struct{})
	t := cfg.clock.AfterFunc(d, func() { close(fired) })
	select {
	case <-ctx.Done():
		t.Stop()
		return false
	case <-fired:
		return true
	}
}
