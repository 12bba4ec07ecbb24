package balancer

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc/metadata"
)

// RingHash is the name of the ring-hash policy (consistent hashing, as
// Envoy's RING_HASH and grpc-go's ring_hash_experimental, gRFC A42): a
// request with a hash goes to the first ring entry at or after it, so
// requests with the same hash stick to one endpoint and an endpoint's
// departure moves mostly its own requests. A request without a hash
// (PickInfo.HasHash false) gets a random one.
//
// The ring is built as grpc-go and Envoy build it, so the same endpoints
// and weights give the same ring, and a hash the same endpoint, on every
// data path: endpoints sorted by key (the endpoint's hash key, gRFC A76,
// else its address); a ring of
// min(ceil(minWeight × minRingSize)/minWeight, maxRingSize) entries, where
// minWeight is the smallest weight's share of the total; entries in
// proportion to weight, the i-th entry of the endpoint with key k at
// xxhash64("k_i").
// A ring smaller than the endpoint count leaves some endpoints without an
// entry, which with the cap below happens past 4096 endpoints; maglev,
// with 65537 entries by default, suits such services better.
//
// Settings, as JSON: {"minRingSize": 1024, "maxRingSize": 4096,
// "requestHashHeader": "x-user"}. As in grpc-go, sizes above 8388608 are
// rejected, min may not exceed max, and both are then capped at 4096
// entries, which bounds the memory and build time a control plane can
// demand. requestHashHeader (gRFC A76) makes a request without a hash
// (from an xDS hash policy) hash the named header's values, joined with
// commas, as grpc-go does; a request without the header gets a random
// hash. Binary ("-bin") headers are refused.
const RingHash = "ring_hash"

const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 4096
	maxRingSizeBound   = 8 * 1024 * 1024
	ringSizeCap        = 4096
)

func init() { Register(newRingHashBuilder(rand.Uint64)) }

type ringHashConfig struct {
	MinRingSize       uint64 `json:"minRingSize"`
	MaxRingSize       uint64 `json:"maxRingSize"`
	RequestHashHeader string `json:"requestHashHeader"`
}

func parseRingHash(js json.RawMessage) (ringHashConfig, error) {
	var c ringHashConfig
	if err := unmarshalConfig(js, &c); err != nil {
		return ringHashConfig{defaultMinRingSize, defaultMaxRingSize, ""}, err
	}
	if err := checkRequestHashHeader(c.RequestHashHeader); err != nil {
		return ringHashConfig{defaultMinRingSize, defaultMaxRingSize, ""}, err
	}
	if c.MinRingSize > maxRingSizeBound || c.MaxRingSize > maxRingSizeBound {
		return c, fmt.Errorf("ring sizes %d..%d: must be at most %d", c.MinRingSize, c.MaxRingSize, maxRingSizeBound)
	}
	if c.MinRingSize == 0 {
		c.MinRingSize = defaultMinRingSize
	}
	if c.MaxRingSize == 0 {
		c.MaxRingSize = defaultMaxRingSize
	}
	if c.MinRingSize > c.MaxRingSize {
		return c, fmt.Errorf("minRingSize %d is greater than maxRingSize %d", c.MinRingSize, c.MaxRingSize)
	}
	c.MinRingSize = min(c.MinRingSize, ringSizeCap)
	c.MaxRingSize = min(c.MaxRingSize, ringSizeCap)
	return c, nil
}

// newRingHashBuilder returns the policy drawing hashes for requests that
// have none from rng.
func newRingHashBuilder(rng func() uint64) Builder {
	return configBuilder[ringHashConfig]{
		name:  RingHash,
		parse: parseRingHash,
		build: func(c ringHashConfig, serving []*Endpoint) Picker {
			p := newRingHashPicker(serving, c.MinRingSize, c.MaxRingSize, rng)
			p.header = newHashHeader(c.RequestHashHeader)
			return p
		},
	}
}

// ringHashPicker is immutable; Pick is safe for concurrent use.
type ringHashPicker struct {
	endpoints []*Endpoint
	hashes    []uint64 // ascending
	owners    []uint32 // owners[i] indexes endpoints: the owner of hashes[i]
	rng       func() uint64
	header    hashHeader // requestHashHeader; zero for none
}

func newRingHashPicker(serving []*Endpoint, minSize, maxSize uint64, rng func() uint64) *ringHashPicker {
	eps := slices.SortedFunc(slices.Values(serving), func(a, b *Endpoint) int { return cmp.Compare(a.Key(), b.Key()) })
	var total float64
	for _, e := range eps {
		total += float64(e.EffectiveWeight())
	}
	minWeight := 1.0
	for _, e := range eps {
		minWeight = min(minWeight, float64(e.EffectiveWeight())/total)
	}
	// Scale the ring so that the least weighted endpoint gets a whole
	// number of entries, within the bounds.
	scale := math.Min(math.Ceil(minWeight*float64(minSize))/minWeight, float64(maxSize))
	type entry struct {
		hash  uint64
		owner uint32
	}
	entries := make([]entry, 0, int(math.Ceil(scale)))
	var buf []byte
	var current, target float64
	for i, e := range eps {
		target += scale * float64(e.EffectiveWeight()) / total
		for n := 0; current < target; n++ {
			buf = strconv.AppendInt(append(append(buf[:0], e.Key()...), '_'), int64(n), 10)
			entries = append(entries, entry{xxhash.Sum64(buf), uint32(i)})
			current++
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return cmp.Compare(a.hash, b.hash) })
	p := &ringHashPicker{
		endpoints: eps,
		hashes:    make([]uint64, len(entries)),
		owners:    make([]uint32, len(entries)),
		rng:       rng,
	}
	for i, en := range entries {
		p.hashes[i], p.owners[i] = en.hash, en.owner
	}
	return p
}

func (p *ringHashPicker) Pick(info PickInfo) (PickResult, error) {
	h := info.Hash
	if !info.HasHash {
		h = unhashed(info, p.header, p.rng)
	}
	// The first entry at or after h, wrapping past the end to the first.
	lo, hi := 0, len(p.hashes)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if p.hashes[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == len(p.hashes) {
		lo = 0
	}
	return PickResult{Endpoint: p.endpoints[p.owners[lo]]}, nil
}

// unhashed is the hash a consistent-hashing policy places a request that
// has no Hash by: when the policy names a header (gRFC A76's
// requestHashHeader), xxhash64 of its values joined with commas, from the
// HTTP request's Header or the gRPC call's outgoing metadata, else a
// random one.
func unhashed(info PickInfo, header hashHeader, rng func() uint64) uint64 {
	if header.http != "" {
		var vs []string
		if info.Header != nil {
			vs = info.Header[header.http]
		} else if info.Ctx != nil {
			vs = metadata.ValueFromOutgoingContext(info.Ctx, header.grpc)
		}
		switch len(vs) {
		case 0:
		case 1:
			return xxhash.Sum64String(vs[0])
		default:
			return xxhash.Sum64String(strings.Join(vs, ","))
		}
	}
	return rng()
}

// hashHeader is a requestHashHeader as each protocol spells it, so a pick
// need not convert it: canonical for an http.Header, lower case for gRPC
// metadata.
type hashHeader struct{ http, grpc string }

func newHashHeader(name string) hashHeader {
	if name == "" {
		return hashHeader{}
	}
	return hashHeader{http: http.CanonicalHeaderKey(name), grpc: strings.ToLower(name)}
}

// checkRequestHashHeader validates a requestHashHeader as grpc-go does.
func checkRequestHashHeader(name string) error {
	if name == "" {
		return nil
	}
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("requestHashHeader %q is not a header name", name)
	}
	if strings.HasSuffix(strings.ToLower(name), "-bin") {
		return fmt.Errorf("requestHashHeader %q: binary headers cannot be hashed", name)
	}
	return nil
}
