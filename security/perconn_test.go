package security_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/security"
)

// TestPerConnection: the listener and the gRPC credentials serve each
// connection as the chooser says (TLS, plaintext, or refused), and tell
// it whether the connection opened with a TLS record.
func TestPerConnection(t *testing.T) {
	caS, caA := newCA(t, tdS), newCA(t, tdA)
	serverCfg := security.ServerTLSConfig(security.NewStaticSource(issue(t, caS, serverS), caS.Bundle(), caA.Bundle()), nil)
	clientCfg := security.ClientTLSConfig(security.NewStaticSource(issue(t, caA, clientA), caS.Bundle()), security.AuthorizeID(serverS))
	var mode atomic.Value // "tls", "plain" or "refuse"
	var sawTLS atomic.Bool
	choose := func(_ context.Context, c net.Conn, isTLS bool) (*tls.Config, error) {
		sawTLS.Store(isTLS)
		switch mode.Load() {
		case "tls":
			return serverCfg, nil
		case "plain":
			return nil, nil
		}
		return nil, errors.New("refused")
	}
	ln := listen(t)
	serveHTTP(t, security.PerConnectionListener(ln, choose, security.WithPeekTimeout(2*time.Second)), idHandler)
	httpAddr := ln.Addr().String()
	grpcAddr := serveGRPC(t, security.PerConnectionCredentials(context.Background(), choose), &healthServer{want: clientA})

	for _, c := range []struct {
		mode      string
		tls       bool
		wantHTTP  string // body; "" = refused
		wantGRPC  codes.Code
		wantTLSOn bool
	}{
		{"tls", true, clientA.String(), codes.OK, true},
		{"tls", false, "", codes.Unavailable, false},
		{"plain", false, "plaintext", codes.Unauthenticated, false}, // served, no peer ID
		{"refuse", false, "", codes.Unavailable, false},
		{"refuse", true, "", codes.Unavailable, true},
	} {
		name := c.mode + "/plaintext client"
		if c.tls {
			name = c.mode + "/mTLS client"
		}
		t.Run(name, func(t *testing.T) {
			mode.Store(c.mode)
			var cfg *tls.Config
			scheme, creds := "http://", insecure.NewCredentials()
			if c.tls {
				cfg, scheme, creds = clientCfg, "https://", credentials.NewTLS(clientCfg)
			}
			code, body, err := get(httpClient(t, cfg, false), scheme+httpAddr+"/")
			switch {
			case c.wantHTTP == "" && err == nil && code == http.StatusOK:
				t.Errorf("HTTP: served %q, want refused", body)
			case c.wantHTTP != "" && (err != nil || body != c.wantHTTP):
				t.Errorf("HTTP: %d %q %v, want %q", code, body, err, c.wantHTTP)
			}
			if sawTLS.Load() != c.wantTLSOn {
				t.Errorf("chooser saw isTLS = %v, want %v", sawTLS.Load(), c.wantTLSOn)
			}
			if err := grpcCheck(t, grpcAddr, creds); status.Code(err) != c.wantGRPC {
				t.Errorf("gRPC: %v, want %v", err, c.wantGRPC)
			}
		})
	}
}

// TestPerConnectionListenerCloseEndsChooser: a chooser waiting (for a
// control plane, say) returns when the listener closes, so Close is prompt.
func TestPerConnectionListenerCloseEndsChooser(t *testing.T) {
	ln := listen(t)
	entered := make(chan struct{}, 1)
	pl := security.PerConnectionListener(ln, func(ctx context.Context, _ net.Conn, _ bool) (*tls.Config, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("G")); err != nil {
		t.Fatal(err)
	}
	<-entered
	start := time.Now()
	if err := pl.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %s with a chooser waiting, want prompt", d)
	}
}
