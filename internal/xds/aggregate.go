package xds

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// MaxAggregateDepth bounds the chain of aggregate clusters below a root,
// as grpc-go bounds it: a cluster 16 levels below the root is refused.
const MaxAggregateDepth = 16

// AggregateWatcher receives what an aggregate cluster resolves to. Its
// calls are serialized with the Client's other watcher calls.
type AggregateWatcher interface {
	// OnLeaves delivers the aggregate cluster and its leaf clusters (EDS,
	// LOGICAL_DNS or STATIC), highest priority first: the depth-first
	// order of the aggregate clusters' lists, each leaf at its first
	// place only (gRFC A37). It is called once every cluster of the graph
	// is known, and again whenever one of them changes.
	OnLeaves(root *Cluster, leaves []*Cluster)
	// OnError reports that the graph cannot be resolved: it loops, is
	// deeper than MaxAggregateDepth, or an underlying cluster was
	// rejected before any version was accepted, or does not exist.
	OnError(err error)
}

// Aggregate follows an aggregate cluster's underlying clusters: it
// subscribes to each cluster the graph reaches, through the Client, and
// cancels the subscription of each one the graph no longer reaches. It is
// safe for concurrent use.
type Aggregate struct {
	c *Client
	w AggregateWatcher

	mu     sync.Mutex
	closed bool
	root   *Cluster
	nodes  map[string]*aggNode
	// lastRoot and last are what OnLeaves was last given (nil after an
	// error), so that an unchanged graph is not delivered again.
	lastRoot *Cluster
	last     []*Cluster
}

// aggNode is one underlying cluster's watch and state.
type aggNode struct {
	cancel func()
	known  bool     // an update, a rejection or a does-not-exist came
	res    *Cluster // the latest accepted version
	err    error    // set when res is nil: why the cluster is unusable
}

// NewAggregate returns an Aggregate reporting to w; Update gives it the
// aggregate cluster to follow. It must be closed.
func NewAggregate(c *Client, w AggregateWatcher) *Aggregate {
	return &Aggregate{c: c, w: w, nodes: map[string]*aggNode{}}
}

// Update follows root, a new version of the aggregate cluster (Kind
// ClusterAggregate). It may call the watcher before it returns, so it
// must not be called with a lock the watcher takes.
func (a *Aggregate) Update(root *Cluster) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.root = root
	a.resolveLocked()
}

// Close cancels every subscription; the watcher is not called after Close
// returns.
func (a *Aggregate) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	for name, n := range a.nodes {
		n.cancel()
		delete(a.nodes, name)
	}
}

// aggChild watches one underlying cluster for a.
type aggChild struct {
	a    *Aggregate
	name string
	n    *aggNode
}

func (w *aggChild) update(f func(n *aggNode)) {
	a := w.a
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed || a.nodes[w.name] != w.n {
		return // no longer followed
	}
	f(w.n)
	a.resolveLocked()
}

func (w *aggChild) OnUpdate(r Resource) {
	w.update(func(n *aggNode) { n.known, n.res, n.err = true, r.(*Cluster), nil })
}

func (w *aggChild) OnError(err error) {
	w.update(func(n *aggNode) {
		if n.res == nil {
			// A version accepted before keeps serving.
			n.known, n.err = true, err
		}
	})
}

func (w *aggChild) OnDoesNotExist() {
	w.update(func(n *aggNode) { n.known, n.res, n.err = true, nil, errors.New("does not exist") })
}

// resolveLocked walks the graph from the root, subscribes to the clusters
// it reaches for the first time, cancels those it no longer reaches, and
// tells the watcher the leaves, or why there are none.
func (a *Aggregate) resolveLocked() {
	if a.root == nil {
		return
	}
	reached := map[string]bool{}
	var leaves []*Cluster
	isLeaf := map[string]bool{}
	pending := false
	var fresh []string // nodes made by this walk, to subscribe to after it
	var walk func(c *Cluster, path []string) error
	walk = func(c *Cluster, path []string) error {
		for _, name := range c.AggregateClusters {
			if i := slices.Index(path, name); i >= 0 {
				return fmt.Errorf("aggregate cluster %q: the graph loops: %s -> %s", a.root.Name, strings.Join(path, " -> "), name)
			}
			if len(path) >= MaxAggregateDepth {
				return fmt.Errorf("aggregate cluster %q: the graph exceeds the maximum depth of %d at %q (%s -> %s)",
					a.root.Name, MaxAggregateDepth, name, strings.Join(path, " -> "), name)
			}
			reached[name] = true
			n := a.nodes[name]
			if n == nil {
				n = &aggNode{}
				a.nodes[name] = n
				fresh = append(fresh, name)
			}
			switch {
			case !n.known:
				pending = true
			case n.res == nil:
				return fmt.Errorf("aggregate cluster %q: underlying cluster %q (%s): %w", a.root.Name, name, strings.Join(path, " -> "), n.err)
			case n.res.Kind == ClusterAggregate:
				if err := walk(n.res, append(path, name)); err != nil {
					return err
				}
			case !isLeaf[name]:
				isLeaf[name] = true
				leaves = append(leaves, n.res)
			}
		}
		return nil
	}
	err := walk(a.root, []string{a.root.Name})
	if err == nil {
		for name, n := range a.nodes {
			if !reached[name] {
				n.cancel()
				delete(a.nodes, name)
			}
		}
	}
	// The clusters reached for the first time are subscribed to only now,
	// after those no longer reached were canceled: a state-of-the-world
	// client drops a name with its next request that adds one, so the
	// request that adds these carries the removals. Subscribed during the
	// walk, the addition could leave before the removals and they would
	// wait for some later addition. (Watch delivers later, on the
	// serializer, never now.)
	for _, name := range fresh {
		n := a.nodes[name]
		n.cancel = a.c.Watch(ClusterType, name, &aggChild{a: a, name: name, n: n})
	}
	switch {
	case err != nil:
		// The clusters already followed stay subscribed: the graph is
		// likely to be fixed by an update to one of them.
		a.lastRoot, a.last = nil, nil
		a.w.OnError(err)
	case pending:
	case len(leaves) == 0:
		a.lastRoot, a.last = nil, nil
		a.w.OnError(fmt.Errorf("aggregate cluster %q: the graph has no leaf clusters", a.root.Name))
	case a.lastRoot == a.root && slices.Equal(leaves, a.last):
	default:
		a.lastRoot, a.last = a.root, leaves
		a.w.OnLeaves(a.root, leaves)
	}
}
