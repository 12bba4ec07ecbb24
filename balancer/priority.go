package balancer

import (
	"cmp"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"

	"github.com/weftmesh/weft/resolver"
)

const (
	// overprovisioningFactor is Envoy's default, in percent: a priority or
	// locality with 1/1.4 (71%) of its endpoints healthy still counts as
	// fully healthy, and below that hands traffic on in proportion.
	overprovisioningFactor = 140
	// panicThreshold is Envoy's default healthy panic threshold, in
	// percent.
	panicThreshold = 50
)

// NewPriorityLocality returns a Builder that spreads requests over the
// endpoints' priorities and localities as Envoy does, and hands each
// request to an instance of child running over one locality's endpoints.
// Its name is "priority_locality:" followed by the child's; settings given
// as JSON are the child's and go to every instance of it.
//
// Draining endpoints are excluded from everything below, as Envoy
// excludes hosts that EDS marks DRAINING. An endpoint is healthy when its
// Health serves (an endpoint that outlier detection has ejected does not).
//
// Priorities (resolver.Endpoint.Priority, lower preferred; the values
// present are taken in order, gaps ignored):
//   - A priority's health is min(100, 140 × healthy / endpoints), in whole
//     percent rounded down (overprovisioning factor 1.4; see
//     WithoutOverprovisioning for grpc-go's behaviour, which has none).
//   - Load goes to priorities in order: each takes
//     min(what is left, health × 100 / min(100, Σ health)) percent; the
//     rounding remainder goes to the first priority that took any. So a
//     priority with 80% of its endpoints healthy keeps all its traffic,
//     and one with 50% healthy keeps 70% and spills 30% to a healthy
//     next priority.
//   - A priority is in panic when fewer than 50% of its endpoints are
//     healthy, unless the sum of health reaches 100. A priority in panic
//     sends its share to all its endpoints, healthy or not, ignoring
//     localities. When every priority is in panic, shares follow endpoint
//     counts instead of health.
//
// Localities (resolver.Endpoint.Locality, weighted by LocalityWeight, read
// from the locality's first endpoint) within a priority not in panic: a
// locality is chosen with probability proportional to LocalityWeight ×
// min(1, 1.4 × healthy / endpoints), then the child picks within it.
// Endpoint counts do not matter: two localities of weight 1 share equally
// whatever their sizes, as in Envoy's locality-weighted balancing.
//
// Zone-aware routing (WithZoneAware; Envoy's zone-aware load balancing)
// replaces locality weights within a priority not in panic when the
// priority has at least two localities, at least MinClusterSize healthy
// endpoints, and the caller's locality (ZoneAwareConfig.Local) among its
// localities: requests stay in the caller's locality while it holds at
// least its share of the healthy endpoints, and the excess spills over to
// the localities that hold more than their share, in proportion to the
// excess, by the formula zoneAware.shares documents. Envoy compares the
// upstream's healthy endpoints with the spread of the caller's own
// service (its "local cluster"), which a proxyless client does not know.
// Unless ZoneAwareConfig.LocalWeights says otherwise, Weft assumes that
// the callers are spread over localities as the upstream's endpoints are
// (all of them, healthy or not, draining aside): with equal spreads this
// is Envoy's behaviour, "stay local while the local locality has its
// proportional share of healthy endpoints; spill in proportion to the
// other localities' spare share otherwise". Envoy applies zone-aware
// routing to priority 0 only; Weft applies it to every priority that
// receives traffic, since with failover in progress a request is still
// best kept in the caller's locality. A RoutingEnabledPercent below 100
// routes that share zone-aware and the rest by locality weight.
//
// A pick draws one random number (or, for a request with a hash, mixes the
// hash, so that a stable endpoint set sends a hash to one locality) and
// finds its locality by binary search in a table built with the picker; it
// takes no lock and allocates nothing. Child instances live as long as
// their (priority, locality) does, so stateful children keep their state
// across updates.
//
// The Builder is immutable and safe for concurrent use; its Balancer
// follows the Balancer contract. A child instance that publishes a picker
// on its own goroutine changes only what its locality picks, not the
// shares, which depend only on the endpoint set.
func NewPriorityLocality(child Builder, opts ...PriorityOption) Builder {
	return newPriorityLocality(child, rand.Uint64, opts...)
}

func newPriorityLocality(child Builder, rng func() uint64, opts ...PriorityOption) Builder {
	b := &plBuilder{child: child, rng: rng, factor: overprovisioningFactor}
	for _, o := range opts {
		if o != nil {
			o(b)
		}
	}
	return b
}

// plBuilder is immutable once built.
type plBuilder struct {
	child Builder
	rng   func() uint64
	zone  *zoneAware // nil: locality weights only
	// factor is the overprovisioning factor in percent; 0 means none
	// (WithoutOverprovisioning).
	factor uint64
}

// WithoutOverprovisioning drops the overprovisioning factor, as grpc-go
// does and as the node's client feature
// "envoy.lb.does_not_support_overprovisioning" tells an xDS control plane
// (which must then supply any gradual failover itself): a priority keeps
// all its traffic while any of its endpoints is healthy, and a locality
// its full weight while any of its endpoints is, so traffic moves to the
// next priority, or leaves a locality, only when none is. Since a
// priority with a healthy endpoint is then fully healthy, panic (with
// its threshold of 50% healthy) happens only when no priority has a
// healthy endpoint.
func WithoutOverprovisioning() PriorityOption {
	return func(b *plBuilder) { b.factor = 0 }
}

func (b *plBuilder) Name() string { return "priority_locality:" + b.child.Name() }

// ParseConfig implements ConfigParser for the child's settings.
func (b *plBuilder) ParseConfig(js json.RawMessage) (any, error) {
	return parseChildConfig(b.child, js)
}

func (b *plBuilder) Build(opts BuildOptions) Balancer {
	return &plBalancer{
		child:  b.child,
		config: opts.Config,
		update: opts.UpdatePicker,
		eject:  opts.OnEjection,
		rng:    b.rng,
		zone:   b.zone,
		factor: b.factor,
		leaves: map[plKey]*plLeaf{},
		panics: map[uint32]*plLeaf{},
	}
}

// plKey names a child instance: one locality of one priority.
type plKey struct {
	priority uint32
	locality resolver.Locality
}

// plLeaf is one child instance and its latest picker, which the child's
// UpdatePicker stores and picks load.
type plLeaf struct {
	bal    Balancer
	picker atomic.Pointer[pickerBox]
}

// plBalancer is a Balancer; its methods are serialized by the Balancer
// contract, so its maps need no lock.
type plBalancer struct {
	child  Builder
	config any
	update func(Picker)
	eject  func(ctx context.Context, addr string, ejected bool)
	rng    func() uint64
	zone   *zoneAware
	factor uint64             // overprovisioning, percent; 0: none
	leaves map[plKey]*plLeaf  // per locality, for priorities not in panic
	panics map[uint32]*plLeaf // per priority in panic: all its endpoints
	closed bool
}

func (b *plBalancer) newLeaf() *plLeaf {
	l := &plLeaf{}
	l.picker.Store(&pickerBox{ErrPicker(ErrNoHealthyEndpoint)})
	l.bal = b.child.Build(BuildOptions{
		UpdatePicker: func(p Picker) { l.picker.Store(&pickerBox{p}) },
		Config:       b.config,
		OnEjection:   b.eject,
	})
	return l
}

// plLocality is one locality of one priority, as an update sees it.
type plLocality struct {
	key            plKey
	weight         uint64
	healthy, total uint64
	eps            []*Endpoint
}

// plPriority is one priority, as an update sees it.
type plPriority struct {
	value          uint32
	localities     []*plLocality
	healthy, total uint64
	health         uint64 // percent
	load           uint64 // percent
	panic          bool
}

// groupEndpoints groups eps by priority, ascending, then by locality in
// order of first appearance, leaving Draining endpoints out.
func groupEndpoints(eps []*Endpoint) []*plPriority {
	var prios []*plPriority
	byKey := map[plKey]*plLocality{}
	byPrio := map[uint32]*plPriority{}
	for _, e := range eps {
		if e.Health == resolver.Draining {
			continue
		}
		p := byPrio[e.Priority]
		if p == nil {
			p = &plPriority{value: e.Priority}
			byPrio[e.Priority] = p
			prios = append(prios, p)
		}
		k := plKey{e.Priority, e.Locality}
		l := byKey[k]
		if l == nil {
			l = &plLocality{key: k, weight: uint64(max(e.LocalityWeight, 1))}
			byKey[k] = l
			p.localities = append(p.localities, l)
		}
		l.eps = append(l.eps, e)
		l.total++
		p.total++
		if e.Health.Serving() {
			l.healthy++
			p.healthy++
		}
	}
	slices.SortFunc(prios, func(a, b *plPriority) int { return cmp.Compare(a.value, b.value) })
	return prios
}

// priorityLoads sets each priority's health, load and panic flag by
// Envoy's rules (LoadBalancerBase::recalculatePerPriorityState and
// recalculatePerPriorityPanic), in whole percent, with overprovisioning
// factor percent (0: none, so any healthy endpoint makes a priority
// fully healthy).
func priorityLoads(prios []*plPriority, factor uint64) {
	var sum, hosts uint64
	for _, p := range prios {
		p.health = 0
		switch {
		case p.total == 0:
		case factor == 0 && p.healthy > 0:
			p.health = 100
		case factor > 0:
			p.health = min(100, factor*p.healthy/p.total)
		}
		sum += p.health
		hosts += p.total
	}
	normalized := min(100, sum)
	totalPanic := len(prios) > 0
	for _, p := range prios {
		healthyPercent := uint64(0)
		if p.total > 0 {
			healthyPercent = 100 * p.healthy / p.total
		}
		p.panic = normalized < 100 && healthyPercent < panicThreshold
		totalPanic = totalPanic && p.panic
	}
	left := uint64(100)
	first := -1
	switch {
	case totalPanic && hosts == 0:
		return // nothing to route to
	case totalPanic:
		// Every priority in panic: shares by endpoint count.
		for i, p := range prios {
			p.load = 100 * p.total / hosts
			left -= p.load
			if first < 0 && p.total > 0 {
				first = i
			}
		}
	default:
		for i, p := range prios {
			p.load = min(left, p.health*100/normalized)
			left -= p.load
			if first < 0 && p.load > 0 {
				first = i
			}
		}
	}
	if first >= 0 {
		prios[first].load += left
	}
}

// localityWeight is Envoy's effective locality weight: LocalityWeight ×
// min(1, factor × healthy / endpoints), or, without overprovisioning
// (factor 0), LocalityWeight while any endpoint is healthy.
func localityWeight(l *plLocality, factor uint64) float64 {
	switch {
	case l.total == 0 || l.healthy == 0:
		return 0
	case factor == 0:
		return float64(l.weight)
	}
	avail := math.Min(1, float64(factor)/100*float64(l.healthy)/float64(l.total))
	return float64(l.weight) * avail
}

func (b *plBalancer) UpdateEndpoints(eps []*Endpoint) {
	if b.closed {
		return
	}
	prios := groupEndpoints(eps)
	priorityLoads(prios, b.factor)

	var (
		leaves []*plLeaf
		shares []float64
		scopes []plScope
	)
	seen := make(map[plKey]bool)
	inPanic := make(map[uint32]bool)
	for _, p := range prios {
		// Every locality's instance is kept up to date, even one that gets
		// no share now, so that its state is current when it does.
		var total float64
		for _, l := range p.localities {
			seen[l.key] = true
			lf := b.leaves[l.key]
			if lf == nil {
				lf = b.newLeaf()
				b.leaves[l.key] = lf
			}
			lf.bal.UpdateEndpoints(l.eps)
			total += localityWeight(l, b.factor)
		}
		if p.load == 0 {
			continue
		}
		share := float64(p.load) / 100
		if p.panic && b.zone != nil && b.zone.cfg.FailTrafficOnPanic {
			leaves = append(leaves, failLeaf)
			shares = append(shares, share)
			continue
		}
		scope := plScope{priority: p.value}
		if p.panic {
			inPanic[p.value] = true
			var all []*Endpoint
			for _, l := range p.localities {
				for _, e := range l.eps {
					if !e.Health.Serving() {
						c := *e
						c.Health = resolver.Healthy
						e = &c
					}
					all = append(all, e)
				}
			}
			pl := b.panics[p.value]
			if pl == nil {
				pl = b.newLeaf()
				b.panics[p.value] = pl
			}
			pl.bal.UpdateEndpoints(all)
			leaves = append(leaves, pl)
			shares = append(shares, share)
			scope.eps = all
			scopes = append(scopes, scope)
			continue
		}
		if total == 0 {
			continue // unreachable: a priority with load has a healthy endpoint
		}
		var zone []float64
		if b.zone != nil {
			zone = b.zone.shares(p)
		}
		for i, l := range p.localities {
			w := localityWeight(l, b.factor) / total
			if zone != nil {
				w = b.zone.routing*zone[i] + (1-b.zone.routing)*w
			}
			if w > 0 {
				leaves = append(leaves, b.leaves[l.key])
				shares = append(shares, share*w)
				scope.eps = append(scope.eps, l.eps...)
			}
		}
		scopes = append(scopes, scope)
	}
	for k, l := range b.leaves {
		if !seen[k] {
			l.bal.Close()
			delete(b.leaves, k)
		}
	}
	for k, l := range b.panics {
		if !inPanic[k] {
			l.bal.Close()
			delete(b.panics, k)
		}
	}
	if len(leaves) == 0 {
		b.update(ErrPicker(ErrNoHealthyEndpoint))
		return
	}
	pk := newPLPicker(leaves, shares, b.rng)
	pk.scopes = scopes
	b.update(pk)
}

func (b *plBalancer) Close() {
	if b.closed {
		return
	}
	b.closed = true
	for _, l := range b.leaves {
		l.bal.Close()
	}
	for _, l := range b.panics {
		l.bal.Close()
	}
}

// failLeaf takes the share of a priority in panic when traffic must fail.
var failLeaf = func() *plLeaf {
	l := &plLeaf{}
	l.picker.Store(&pickerBox{ErrPicker(ErrNoHealthyEndpoint)})
	return l
}()

// plPicker is immutable; Pick is safe for concurrent use and lock-free.
type plPicker struct {
	leaves []*plLeaf
	// bounds[i] is the upper end, exclusive, of the draws that go to
	// leaves[i], as a fraction of 2^64; the last leaf takes every draw
	// above the one before it.
	bounds []uint64
	rng    func() uint64
	// scopes lists, for each priority that receives traffic, the
	// endpoints of its localities that do (all of them for a priority in
	// panic), for retryScope.
	scopes []plScope
}

// plScope is what a pick that chose one priority may reach.
type plScope struct {
	priority uint32
	eps      []*Endpoint
}

// retryScope implements scopedPicker: the endpoints a pick that chose
// priority prio draws from, nil when prio receives no traffic.
func (p *plPicker) retryScope(prio uint32) []*Endpoint {
	for i := range p.scopes {
		if p.scopes[i].priority == prio {
			return p.scopes[i].eps
		}
	}
	return nil
}

func newPLPicker(leaves []*plLeaf, shares []float64, rng func() uint64) *plPicker {
	var total float64
	for _, s := range shares {
		total += s
	}
	bounds := make([]uint64, len(shares))
	var acc float64
	for i, s := range shares {
		acc += s
		f := acc / total
		if f >= 1 || i == len(shares)-1 {
			bounds[i] = math.MaxUint64
		} else {
			bounds[i] = uint64(math.Ldexp(f, 64))
		}
	}
	return &plPicker{leaves: leaves, bounds: bounds, rng: rng}
}

func (p *plPicker) Pick(info PickInfo) (PickResult, error) {
	var r uint64
	if info.HasHash {
		r = mix64(info.Hash)
	} else {
		r = p.rng()
	}
	lo, hi := 0, len(p.bounds)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r < p.bounds[mid] {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return p.leaves[lo].picker.Load().p.Pick(info)
}

// mix64 is splitmix64's finalizer: it spreads a request hash so that the
// locality chosen from it is independent of the endpoint a hashing child
// chooses from the same hash.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
