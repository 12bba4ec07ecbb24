package xds

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"
)

// Incremental xDS (WithDelta). The stream carries, per type, changes of
// the names subscribed to, and responses carry only the resources that
// changed and the names of those removed. The watch state, the
// does-not-exist timers, the NACK pacing and the decode cache are the
// state-of-the-world client's.

type deltaStream = grpc.BidiStreamingClient[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]

func (c *Client) runDeltaStream(ctx context.Context, cancel context.CancelFunc, stream deltaStream, srv ServerConfig) (received bool, err error) {
	gen := c.beginStream(srv)
	first := true
	defer c.upAfter(srv, gen)()
	return runADS(cancel, func() error { return c.deltaSendLoop(ctx, stream, gen) }, stream.Recv,
		func(resp *discoveryv3.DeltaDiscoveryResponse) {
			if first {
				first = false
				c.streamAnswered(srv, gen)
			}
			c.handleDeltaResponse(resp, gen)
		})
}

// deltaSendLoop sends a request for every type whose subscriptions, ACK or
// NACK changed, until the stream's context ends.
func (c *Client) deltaSendLoop(ctx context.Context, stream deltaStream, gen uint64) error {
	return runSendLoop(ctx, c, gen, c.deltaRequestLocked,
		func(r *discoveryv3.DeltaDiscoveryRequest) { r.Node = c.node },
		(*discoveryv3.DeltaDiscoveryRequest).GetResourceNamesSubscribe, stream.Send)
}

// deltaRequestLocked builds type t's next request, nil if there is nothing
// to send. more reports that another request must follow: a name watched
// again after an unsubscription the server has not been told of is first
// unsubscribed, so that the server, which believes the client holds it,
// sends it again when it is subscribed anew.
func (c *Client) deltaRequestLocked(t ResourceType) (req *discoveryv3.DeltaDiscoveryRequest, more bool) {
	req = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t.TypeURL()}
	sent := c.deltaSent[t]
	if sent == nil {
		// The stream's first request of the type. It must name something:
		// a first request subscribing to nothing is a wildcard request.
		if len(c.resources[t]) == 0 {
			return nil, false
		}
		sent = make(map[string]*resourceState, len(c.resources[t]))
		c.deltaSent[t] = sent
		for name, rs := range c.resources[t] {
			if rs.res != nil && rs.version != "" {
				if req.InitialResourceVersions == nil {
					req.InitialResourceVersions = make(map[string]string)
				}
				req.InitialResourceVersions[name] = rs.version
			}
		}
	}
	for name, rs := range c.resources[t] {
		switch old, ok := sent[name]; {
		case !ok:
			req.ResourceNamesSubscribe = append(req.ResourceNamesSubscribe, name)
			sent[name] = rs
		case old != rs:
			req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, name)
			delete(sent, name)
			more = true
		}
	}
	for name := range sent {
		if _, ok := c.resources[t][name]; !ok {
			req.ResourceNamesUnsubscribe = append(req.ResourceNamesUnsubscribe, name)
			delete(sent, name)
		}
	}
	slices.Sort(req.ResourceNamesSubscribe)
	slices.Sort(req.ResourceNamesUnsubscribe)
	if c.nonces[t] != "" {
		req.ResponseNonce, c.nonces[t] = c.nonces[t], ""
		if e := c.nackErr[t]; e != "" {
			req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: e}
			c.nackErr[t] = ""
		}
	}
	if req.ResponseNonce == "" && len(req.ResourceNamesSubscribe) == 0 && len(req.ResourceNamesUnsubscribe) == 0 {
		return nil, more
	}
	return req, more
}

// handleDeltaResponse applies a response and queues its ACK or NACK.
func (c *Client) handleDeltaResponse(resp *discoveryv3.DeltaDiscoveryResponse, gen uint64) {
	t := typeOf(resp.GetTypeUrl())
	if t == numTypes {
		return // a type never asked for
	}
	// The digest, for NACK pacing, ignores order and the system version,
	// which is for debugging only.
	var digest uint64
	var (
		as      []*anypb.Any
		hashes  []uint64
		wrapped []*discoveryv3.Resource
	)
	for _, r := range resp.GetResources() {
		a := r.GetResource()
		if a == nil {
			continue // a TTL heartbeat: the resource is unchanged
		}
		h := maphash.Bytes(c.seed, a.GetValue()) ^ maphash.String(c.seed, a.GetTypeUrl())
		digest += h ^ maphash.String(c.seed, r.GetName()+"\x00"+r.GetVersion())
		as, hashes, wrapped = append(as, a), append(hashes, h), append(wrapped, r)
	}
	for _, name := range resp.GetRemovedResources() {
		digest += maphash.String(c.seed, "\x00removed\x00"+name)
	}

	c.mu.Lock()
	if c.streamGen != gen {
		c.mu.Unlock()
		return
	}
	if l := &c.last[t]; l.valid && l.nacked && l.digest == digest && l.epoch == c.subEpoch[t] {
		// The rejected resources again: NACK them after a growing delay.
		// Until then nothing sent may carry the nonce, which would ACK
		// them.
		delay := l.nackDelay
		l.nackDelay = min(2*l.nackDelay, nackDelayMax)
		errDetail, nonce := l.errDetail, resp.GetNonce()
		if c.nackTimer[t] != nil {
			c.nackTimer[t].Stop()
		}
		c.nackTimer[t] = c.cfg.clock.AfterFunc(delay, func() {
			c.mu.Lock()
			if c.streamGen == gen && !c.closed {
				c.nonces[t], c.nackErr[t], c.dirty[t] = nonce, errDetail, true
			}
			c.mu.Unlock()
			c.signal()
		})
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()

	// Decode outside the lock. A resource's name is the wrapper's.
	res := c.decode(t, as, hashes)
	seen := make(map[string]bool, len(res))
	var dup string
	for i := range res {
		d := &res[i] // a copy of the cache's entry: safe to change
		name := canonicalName(wrapped[i].GetName())
		switch {
		case name == "":
			name = d.name
		case d.err != nil:
			var re *ResourceError
			if errors.As(d.err, &re) && re.Name == "" {
				named := *re
				named.Name = name
				d.err = &named
			}
		case d.name != name:
			d.err = &ResourceError{Type: t, Name: name, Field: "name", Err: fmt.Errorf("the resource names itself %q", d.name)}
			d.res = nil
		}
		d.name = name
		if seen[name] && dup == "" {
			dup = name
		}
		seen[name] = true
	}
	for _, name := range resp.GetRemovedResources() {
		if seen[canonicalName(name)] && dup == "" {
			dup = name
		}
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streamGen != gen || c.closed {
		return
	}
	var errs []string
	if dup != "" {
		// Which copy is meant is unknowable: reject the whole response.
		errs = append(errs, fmt.Sprintf("xds: %s response version %q: resource %q appears more than once", t, resp.GetSystemVersionInfo(), dup))
	} else {
		for i, d := range res {
			if d.err != nil {
				errs = append(errs, d.err.Error())
			}
			rs := c.resources[t][d.name]
			if rs == nil {
				continue // no longer subscribed
			}
			if rs.dneTimer != nil {
				rs.dneTimer.Stop()
				rs.dneTimer = nil
			}
			if d.err != nil {
				// The last good version, if any, keeps serving.
				rs.err = d.err
				rs.failed = &failedUpdate{raw: d.raw, version: wrapped[i].GetVersion(), at: c.cfg.clock.Now()}
				err := d.err
				c.notifyLocked(rs, func(w Watcher) { w.OnError(err) })
				continue
			}
			rs.err, rs.failed, rs.dne = nil, nil, false
			rs.version = wrapped[i].GetVersion()
			if rs.res != nil && string(rs.raw) == string(d.raw) {
				continue // unchanged: watchers already have it
			}
			rs.res, rs.raw, rs.updated = d.res, d.raw, c.cfg.clock.Now()
			r := d.res
			c.notifyLocked(rs, func(w Watcher) { w.OnUpdate(r) })
		}
		// Removal is explicit in delta, for every type.
		for _, name := range resp.GetRemovedResources() {
			name = canonicalName(name)
			rs := c.resources[t][name]
			if rs == nil {
				continue
			}
			if rs.res == nil {
				if !rs.dne {
					if rs.dneTimer != nil {
						rs.dneTimer.Stop()
						rs.dneTimer = nil
					}
					rs.err, rs.failed, rs.dne = nil, nil, true
					c.notifyLocked(rs, Watcher.OnDoesNotExist)
				}
				continue
			}
			if c.ignoreDeletion {
				continue // gRFC A53: keep serving the last version
			}
			rs.res, rs.raw, rs.err, rs.failed, rs.version, rs.dne = nil, nil, nil, nil, "", true
			c.notifyLocked(rs, Watcher.OnDoesNotExist)
		}
	}
	if c.nackTimer[t] != nil {
		c.nackTimer[t].Stop()
		c.nackTimer[t] = nil
	}
	l := &c.last[t]
	*l = lastResponse{valid: true, digest: digest, epoch: c.subEpoch[t]}
	c.nackErr[t] = ""
	if len(errs) > 0 {
		detail := strings.Join(errs, "; ")
		l.nacked, l.errDetail, l.nackDelay = true, detail, nackDelayBase
		c.nackErr[t] = detail
		c.respondedLocked(t, resp.GetSystemVersionInfo(), len(res), errors.New(detail))
	} else {
		c.versions[t] = resp.GetSystemVersionInfo()
		c.respondedLocked(t, resp.GetSystemVersionInfo(), len(res), nil)
	}
	c.nonces[t] = resp.GetNonce()
	c.ackAfterDeliveryLocked(t, gen)
}
