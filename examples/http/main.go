// Command http shows the two halves of an HTTP service on Weft: a server
// wrapped by the mesh (ListenAndServe) and a client that calls another
// service by name (HTTPClient), with retries steering around a replica
// that fails.
//
//	go run ./examples/http
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"

	"github.com/weftmesh/weft/mesh"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "http example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Server side: any http.Handler, served through the mesh.
	server, err := mesh.New(ctx, mesh.WithServiceName("orders"))
	if err != nil {
		return err
	}
	defer server.Close()
	var replicas []string
	var wg sync.WaitGroup
	// Stop the servers (cancel) before waiting for them; deferred calls run
	// in reverse, so both go in one deferred func.
	defer func() { cancel(); wg.Wait() }()
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		replicas = append(replicas, ln.Addr().String())
		broken := i == 2 // the third replica fails every request
		wg.Add(1)
		go func() {
			defer wg.Done()
			server.Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if broken {
					http.Error(w, "replica is broken", http.StatusServiceUnavailable)
					return
				}
				fmt.Fprintf(w, "order list from %s", r.Context().Value(http.LocalAddrContextKey))
			}))
		}()
	}

	// Client side: the same as WEFT_ENDPOINTS=orders=<replicas>.
	client, err := mesh.New(ctx, mesh.WithServiceName("frontend"), mesh.WithEndpoints("orders", replicas...))
	if err != nil {
		return err
	}
	defer client.Close()

	ok := 0
	for i := 0; i < 30; i++ {
		resp, err := client.HTTPClient().Get("http://orders/list")
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			ok++
		}
	}
	fmt.Fprintf(out, "%d of 30 GETs to http://orders/list succeeded, though one of %d replicas fails every request\n", ok, len(replicas))
	if ok != 30 {
		return fmt.Errorf("%d requests failed", 30-ok)
	}
	return nil
}
