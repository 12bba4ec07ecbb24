package balancer

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Maglev is the name of the Maglev policy (consistent hashing with a
// lookup table, as Envoy's MAGLEV): a request with a hash goes to the
// table entry at hash mod the table size, so requests with the same hash
// stick to one endpoint, and an endpoint's departure moves its own
// requests and few others. A pick is one division and one load, and every
// endpoint's share of the table is close to its weight's share. A request
// without a hash (PickInfo.HasHash false) gets a random one.
//
// The table is built by Envoy's method (weighted Maglev): the permutation
// of the M entries of the endpoint with key k (its hash key, gRFC A76,
// else its address) starts at xxhash64(k, seed 0) mod M and steps by
// xxhash64(k, seed 1) mod (M-1) + 1; endpoints take turns claiming their
// next free entry, each joining a round only as often as its weight
// relative to the heaviest allows. Endpoints take their turns in key
// order, so every client with the same endpoints builds the
// same table whatever order discovery lists them in.
//
// Settings, as JSON: {"tableSize": 65537, "requestHashHeader": "x-user"}.
// The size must be a prime (so that every permutation visits every entry)
// no larger than 5000011, as in Envoy. requestHashHeader is ring_hash's
// (gRFC A76): a request without a hash hashes that header. It should be well above the endpoint count: with fewer entries
// than endpoints, some endpoints get none.
const Maglev = "maglev"

const (
	defaultMaglevTableSize = 65537
	maxMaglevTableSize     = 5000011
)

func init() { Register(newMaglevBuilder(rand.Uint64)) }

type maglevConfig struct {
	TableSize         uint64 `json:"tableSize"`
	RequestHashHeader string `json:"requestHashHeader"`
}

func parseMaglev(js json.RawMessage) (maglevConfig, error) {
	def := maglevConfig{TableSize: defaultMaglevTableSize}
	c := def
	if err := unmarshalConfig(js, &c); err != nil {
		return def, err
	}
	if err := checkRequestHashHeader(c.RequestHashHeader); err != nil {
		return def, err
	}
	if c.TableSize == 0 {
		c.TableSize = defaultMaglevTableSize
	}
	if c.TableSize > maxMaglevTableSize || !new(big.Int).SetUint64(c.TableSize).ProbablyPrime(0) {
		return def, fmt.Errorf("tableSize %d: must be a prime no larger than %d", c.TableSize, maxMaglevTableSize)
	}
	return c, nil
}

// newMaglevBuilder returns the policy drawing hashes for requests that have
// none from rng.
func newMaglevBuilder(rng func() uint64) Builder {
	return configBuilder[maglevConfig]{
		name:  Maglev,
		parse: parseMaglev,
		build: func(c maglevConfig, serving []*Endpoint) Picker {
			p := newMaglevPicker(serving, c.TableSize, rng)
			p.header = newHashHeader(c.RequestHashHeader)
			return p
		},
	}
}

// maglevPicker is immutable; Pick is safe for concurrent use.
type maglevPicker struct {
	endpoints []*Endpoint
	table     []uint32 // indexes into endpoints
	rng       func() uint64
	header    hashHeader // requestHashHeader; zero for none
}

func newMaglevPicker(serving []*Endpoint, size uint64, rng func() uint64) *maglevPicker {
	eps := slices.SortedFunc(slices.Values(serving), func(a, b *Endpoint) int { return cmp.Compare(a.Key(), b.Key()) })
	type builder struct {
		offset, skip, next uint64
		weight, target     float64
	}
	var maxWeight uint32
	for _, e := range eps {
		maxWeight = max(maxWeight, e.EffectiveWeight())
	}
	bs := make([]builder, len(eps))
	d := xxhash.New()
	seeded := func(s string, seed uint64) uint64 {
		d.ResetWithSeed(seed)
		_, _ = d.WriteString(s)
		return d.Sum64()
	}
	for i, e := range eps {
		bs[i] = builder{
			offset: seeded(e.Key(), 0) % size,
			skip:   seeded(e.Key(), 1)%(size-1) + 1,
			weight: float64(e.EffectiveWeight()) / float64(maxWeight),
		}
	}
	const empty = ^uint32(0)
	table := make([]uint32, size)
	for i := range table {
		table[i] = empty
	}
	filled := uint64(0)
	// In round r an endpoint of relative weight w (the heaviest has 1)
	// claims an entry when r·w has reached its target, which then moves on
	// by one: it claims about r·w entries in r rounds.
	for round := 1; filled < size; round++ {
		for i := range bs {
			b := &bs[i]
			if float64(round)*b.weight < b.target {
				continue
			}
			b.target++
			c := (b.offset + b.skip*b.next) % size
			for table[c] != empty {
				b.next++
				c = (b.offset + b.skip*b.next) % size
			}
			table[c] = uint32(i)
			b.next++
			if filled++; filled == size {
				break
			}
		}
	}
	return &maglevPicker{endpoints: eps, table: table, rng: rng}
}

func (p *maglevPicker) Pick(info PickInfo) (PickResult, error) {
	h := info.Hash
	if !info.HasHash {
		h = unhashed(info, p.header, p.rng)
	}
	return PickResult{Endpoint: p.endpoints[p.table[h%uint64(len(p.table))]]}, nil
}
