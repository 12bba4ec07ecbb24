// Command mtls shows SPIFFE identities and authorization on Weft, with a
// development Workload API standing in for SPIRE or Istio's agent: every
// hop is mutual TLS, the server sees who called, and an Istio
// AuthorizationPolicy decides what each caller may do.
//
//	go run ./examples/mtls
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/security/spiffetest"
)

const policy = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: orders
spec:
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["shop.example/ns/shop/sa/frontend"]
    to:
    - operation:
        methods: ["GET"]
        paths: ["/orders/*"]
`

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mtls example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	td := spiffeid.RequireTrustDomainFromString("shop.example")
	ca, err := spiffetest.NewCA(td)
	if err != nil {
		return err
	}
	// One Workload API per workload, as an agent serves each its own SVID.
	identity := func(path string) (*spiffetest.WorkloadAPI, error) {
		return spiffetest.StartWorkloadAPI(ca, spiffeid.RequireFromPath(td, path))
	}
	ordersAPI, err := identity("/ns/shop/sa/orders")
	if err != nil {
		return err
	}
	defer ordersAPI.Close()
	frontendAPI, err := identity("/ns/shop/sa/frontend")
	if err != nil {
		return err
	}
	defer frontendAPI.Close()
	reportsAPI, err := identity("/ns/shop/sa/reports")
	if err != nil {
		return err
	}
	defer reportsAPI.Close()

	dir, err := os.MkdirTemp("", "weft-mtls")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	policyFile := filepath.Join(dir, "authz.yaml")
	if err := os.WriteFile(policyFile, []byte(policy), 0o600); err != nil {
		return err
	}

	// The orders service: identity from its Workload API (as
	// SPIFFE_ENDPOINT_SOCKET would say), policy from a file (as
	// WEFT_AUTHZ_POLICY would say).
	ordersSrc, err := security.NewWorkloadAPISource(ctx, ordersAPI.Addr())
	if err != nil {
		return err
	}
	defer ordersSrc.Close()
	orders, err := mesh.New(ctx, mesh.WithX509Source(ordersSrc), mesh.WithAuthorizationPolicyFile(policyFile))
	if err != nil {
		return err
	}
	defer orders.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() {
		served <- orders.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			caller, _ := security.PeerID(r.Context())
			fmt.Fprintf(w, "hello %s", caller)
		}))
	}()
	defer func() { cancel(); <-served }()
	addr := ln.Addr().String()

	call := func(api *spiffetest.WorkloadAPI, path string) error {
		src, err := security.NewWorkloadAPISource(ctx, api.Addr())
		if err != nil {
			return err
		}
		defer src.Close()
		m, err := mesh.New(ctx, mesh.WithX509Source(src), mesh.WithEndpoints("orders", addr))
		if err != nil {
			return err
		}
		defer m.Close()
		resp, err := m.HTTPClient().Get("http://orders" + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(out, "%-10s GET %-12s -> %d %s\n", api.ID().Path(), path, resp.StatusCode, strings.TrimSpace(string(body)))
		return nil
	}
	for _, c := range []struct {
		api  *spiffetest.WorkloadAPI
		path string
	}{{frontendAPI, "/orders/42"}, {frontendAPI, "/admin"}, {reportsAPI, "/orders/42"}} {
		if err := call(c.api, c.path); err != nil {
			return err
		}
	}

	resp, err := http.Get("http://" + addr + "/orders/42")
	if err != nil {
		fmt.Fprintf(out, "plaintext  GET /orders/42   -> refused (%v)\n", err)
	} else {
		resp.Body.Close()
		fmt.Fprintf(out, "plaintext  GET /orders/42   -> %d (the handler never ran)\n", resp.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	return nil
}
