package xds

import (
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/xds/xdstest"
)

// eventLog collects a client's events.
type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ev = append(l.ev, e)
}

// wait waits until n events of kind were told and returns them.
func (l *eventLog) wait(t *testing.T, kind EventKind, n int) []Event {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		l.mu.Lock()
		var got []Event
		for _, e := range l.ev {
			if e.Kind == kind {
				got = append(got, e)
			}
		}
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s events within 20s, want %d", len(got), kind, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestClientEventsAndConnection(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []Option
	}{
		{"state of the world", nil},
		{"delta", []Option{WithDelta()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := xdstest.NewServer(t)
			srv.SetSnapshot(t, node, "1", xdstest.Cluster("c", "v1"))
			var log eventLog
			c := newTestClient(t, srv.Bootstrap(node), append(tt.opts, fastBackoff(), WithEvents(log.add))...)
			if got := c.Connection(); got.State != ConnNever || got.Server != "" {
				t.Errorf("before any watch: Connection() = %+v, want never connected, no server", got)
			}
			w := newRecorder()
			defer c.Watch(ClusterType, "c", w)()
			w.next(t, "update")

			up := log.wait(t, EventConnected, 1)[0]
			if up.Server != srv.Addr || !up.DownSince.IsZero() {
				t.Errorf("connected event %+v: want server %s, no DownSince", up, srv.Addr)
			}
			applied := log.wait(t, EventApplied, 1)[0]
			if applied.Type != ClusterType || applied.Count != 1 || applied.LastGood.IsZero() {
				t.Errorf("applied event %+v: want CDS, 1 resource, LastGood set", applied)
			}
			if got := c.Connection(); got.State != ConnConnected || got.LastGood.IsZero() {
				t.Errorf("connected: Connection() = %+v", got)
			}

			srv.Stop()
			lost := log.wait(t, EventLost, 1)[0]
			if lost.Err == nil || lost.LastGood.IsZero() {
				t.Errorf("lost event %+v: want the reason and the last good time", lost)
			}
			log.wait(t, EventConnectFailed, 2) // the retries are told, each
			if got := c.Connection(); got.State != ConnReconnecting || got.LastError == "" || got.Since.IsZero() {
				t.Errorf("away: Connection() = %+v, want reconnecting with the last error", got)
			}

			srv.Restart(t)
			back := log.wait(t, EventConnected, 2)[1]
			if back.DownSince.IsZero() || back.LastGood.IsZero() {
				t.Errorf("reconnected event %+v: want DownSince and LastGood", back)
			}
			if got := c.Connection(); got.State != ConnConnected || got.LastError != "" {
				t.Errorf("back: Connection() = %+v, want connected, no error", got)
			}
			// The same version resent on the new stream is no change.
			if n := len(log.wait(t, EventLost, 1)); n != 1 {
				t.Errorf("%d lost events, want 1", n)
			}
			srv.SetSnapshot(t, node, "2", xdstest.Cluster("c", "v2"))
			w.next(t, "update")
			all := log.wait(t, EventApplied, 2)
			if len(all) != 2 || (!c.cfg.delta && all[1].Version != "2") {
				t.Errorf("applied events %+v: want versions 1 and 2 only", all)
			}
		})
	}
}
