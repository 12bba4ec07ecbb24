package balancer

import "time"

// Constructors with injected randomness and time, for deterministic tests.
var (
	NewRandomBuilder       = newRandomBuilder
	NewWRRBuilder          = newWRRBuilder
	NewLeastRequestBuilder = newLeastRequestBuilder
	NewRingHashBuilder     = newRingHashBuilder
	NewMaglevBuilder       = newMaglevBuilder
)

// NewP2CEWMABuilder returns the p2c_ewma policy reading time from now.
func NewP2CEWMABuilder(rng func() uint64, now func() time.Duration) Builder {
	return newP2CEWMABuilder(rng, func() int64 { return int64(now()) })
}

// LatencyEstimate returns e's stored peak-EWMA estimate, as of its last
// observation, and whether there has been one.
func LatencyEstimate(e *Endpoint) (time.Duration, bool) {
	est, _, ok := e.load.ewma.read()
	return time.Duration(est), ok
}

// ScheduleForTest returns the weighted round-robin rotation for eps.
func ScheduleForTest(eps []*Endpoint, limit int) []uint32 {
	return edfSchedule(scheduleWeights(eps, limit))
}

// AddInFlight changes e's in-flight count by n, as n picks (or, negative,
// finishes) would.
func AddInFlight(e *Endpoint, n int64) { e.load.inFlight.Add(n) }

// RingSize returns the number of entries of a ring_hash picker's ring.
func RingSize(p Picker) int { return len(p.(*ringHashPicker).hashes) }

// MaglevTable returns a maglev picker's table as endpoint addresses.
func MaglevTable(p Picker) []string {
	m := p.(*maglevPicker)
	out := make([]string, len(m.table))
	for i, t := range m.table {
		out[i] = m.endpoints[t].Addr
	}
	return out
}
