package security_test

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/weftmesh/weft/security"
)

// stateConn is a connection whose TLS state the test sets.
type stateConn struct {
	net.Conn
	state atomic.Pointer[tls.ConnectionState]
	calls atomic.Int32
}

func (c *stateConn) ConnectionState() tls.ConnectionState {
	c.calls.Add(1)
	return *c.state.Load()
}

// A connection's peer is read from its handshake once, when first asked
// after the handshake; a request's own identity still wins over it.
func TestConnContextReadsThePeerOnce(t *testing.T) {
	svid := issue(t, newCA(t, tdA), clientA)
	c := &stateConn{}
	c.state.Store(&tls.ConnectionState{PeerCertificates: svid.Certificates}) // handshake not done
	ctx := security.ConnContext(context.Background(), c)
	if !security.HasConnPeer(ctx) {
		t.Fatal("HasConnPeer = false for a TLS connection's context")
	}
	if id, ok := security.PeerID(ctx); ok {
		t.Fatalf("PeerID before the handshake completed = %v, want none", id)
	}
	c.state.Store(&tls.ConnectionState{HandshakeComplete: true, PeerCertificates: svid.Certificates})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if id, ok := security.PeerID(ctx); !ok || id != clientA {
				t.Errorf("PeerID = %v, %v; want %v", id, ok, clientA)
			}
		})
	}
	wg.Wait()
	calls := c.calls.Load()
	c.state.Store(&tls.ConnectionState{HandshakeComplete: true}) // would read as no peer
	for range 100 {
		if id, ok := security.PeerID(ctx); !ok || id != clientA {
			t.Fatalf("PeerID after resolving = %v, %v; want %v", id, ok, clientA)
		}
	}
	if c.calls.Load() != calls {
		t.Errorf("the handshake state was read again after the peer was resolved")
	}
	if id, _ := security.PeerID(security.ContextWithPeerID(ctx, clientB)); id != clientB {
		t.Errorf("PeerID with a request's own identity = %v, want %v", id, clientB)
	}

	plain, other := net.Pipe()
	defer plain.Close()
	defer other.Close()
	pctx := security.ConnContext(context.Background(), plain)
	if security.HasConnPeer(pctx) {
		t.Error("HasConnPeer = true for a plaintext connection")
	}
	if _, ok := security.PeerID(pctx); ok {
		t.Error("PeerID reports a peer for a plaintext connection")
	}
}
