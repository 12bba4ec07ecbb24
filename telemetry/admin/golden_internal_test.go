package admin

import (
	"testing"
	"time"
)

func TestBucketBoundsMatchNumBuckets(t *testing.T) {
	if len(bucketBounds)+1 != numBuckets {
		t.Fatalf("len(bucketBounds)+1 = %d, numBuckets = %d", len(bucketBounds)+1, numBuckets)
	}
}

func TestDecisionLogSamplesAllowedKeepsEveryDenial(t *testing.T) {
	l := NewDecisionLog()
	now := time.Unix(1_700_000_000, 0)
	l.now = func() time.Time { return now }
	recorded := 0
	for i := range 1000 {
		if l.Allow() {
			recorded++
			l.Record(Decision{Allowed: true, Path: "/ok"})
		}
		if i%10 == 0 && l.Deny() {
			l.Record(Decision{Path: "/denied"})
		}
		if i%100 == 99 {
			now = now.Add(allowedEvery) // time passes: one more sample
		}
	}
	allowed, denied, recent := l.Snapshot()
	if allowed != 1000 || denied != 100 {
		t.Errorf("counts: %d allowed, %d denied; want 1000 and 100", allowed, denied)
	}
	if recorded != 10 {
		t.Errorf("%d allowed decisions sampled, want 10 (one per %v)", recorded, allowedEvery)
	}
	nd := 0
	for _, d := range recent {
		if !d.Allowed {
			nd++
		}
	}
	if nd != 100 || len(recent) != 110 {
		t.Errorf("kept %d decisions, %d denials; want 110 and 100", len(recent), nd)
	}
	// The ring keeps the newest.
	for range 150 {
		l.Deny()
		l.Record(Decision{Path: "/later"})
	}
	_, _, recent = l.Snapshot()
	for _, d := range recent {
		if !d.Allowed && d.Path != "/later" {
			t.Fatalf("an old denial survived 150 newer ones: %+v", d)
		}
	}
	var nilLog *DecisionLog
	if nilLog.Allow() || nilLog.Deny() {
		t.Error("a nil log asks to record")
	}
}
