package interop

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// routeActionsConfig is a VirtualService using the route actions users
// write, in front of a recording workload, with a second service as the
// mirror. Both services listen on the same two ports, as a mirror without
// a port goes to the port the request came in on.
const routeActionsConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: routes, namespace: default}
spec:
  hosts: [routes.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: routes}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: routes-main, namespace: default, labels: {app: routes}}
spec:
  address: 127.0.0.6
  labels: {app: routes}
  ports: {http: {main.http}, grpc: {main.grpc}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: shadow, namespace: default}
spec:
  hosts: [shadow.mesh.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 7070, name: grpc, protocol: GRPC}
  workloadSelector: {labels: {app: shadow}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: shadow, namespace: default, labels: {app: shadow}}
spec:
  address: 127.0.0.7
  labels: {app: shadow}
  ports: {http: {shadow.http}, grpc: {shadow.grpc}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: routes, namespace: default}
spec:
  hosts: [routes.mesh.local]
  http:
  - name: mirror
    match: [{uri: {prefix: /mirror}}, {uri: {exact: /grpc.testing.TestService/UnaryCall}}]
    route: [{destination: {host: routes.mesh.local}}]
    mirror: {host: shadow.mesh.local}
    mirrorPercentage: {value: 100}
  - name: half
    match: [{uri: {prefix: /half}}]
    route: [{destination: {host: routes.mesh.local}}]
    mirror: {host: shadow.mesh.local}
    mirrorPercentage: {value: 50}
  - name: redirect
    match: [{uri: {prefix: /redirect}}]
    redirect: {uri: /moved, authority: elsewhere.mesh.local, redirectCode: 302}
  - name: rewrite
    match: [{uri: {prefix: /old}}]
    rewrite: {uri: /new, authority: rewritten.mesh.local}
    route: [{destination: {host: routes.mesh.local}}]
  - name: headers
    match: [{uri: {prefix: /headers}}, {uri: {exact: /grpc.testing.TestService/EmptyCall}}]
    headers:
      request:
        set: {x-set: istio}
        add: {x-add: istio}
        remove: [x-remove]
      response:
        add: {x-resp-add: istio}
        remove: [x-resp-remove]
    route: [{destination: {host: routes.mesh.local}}]
  - name: default
    route: [{destination: {host: routes.mesh.local}}]
`

// recorder is a workload that records what reaches it: HTTP requests
// (Host, path, headers) and gRPC calls (:authority, method, metadata). Its
// HTTP answers carry x-resp-remove, for a route to strip.
type recorder struct {
	ip                 string
	httpPort, grpcPort int

	mu   sync.Mutex
	seen []recorded
}

type recorded struct {
	grpc       bool
	host, path string
	header     http.Header
}

func startRecorder(t *testing.T, ip string) *recorder {
	t.Helper()
	r := &recorder{ip: ip}
	hl, gl := listenT(t, ip), listenT(t, ip)
	r.httpPort, r.grpcPort = port(hl), port(gl)
	hs := &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, recorderRPC{r: r})
	go hs.Serve(hl)
	go gs.Serve(gl)
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
	})
	return r
}

func (r *recorder) add(x recorded) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, x)
}

// take returns what arrived since the last take.
func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	io.Copy(io.Discard, req.Body)
	r.add(recorded{host: req.Host, path: req.URL.RequestURI(), header: req.Header.Clone()})
	w.Header().Set("x-resp-remove", "secret")
	io.WriteString(w, "main")
}

type recorderRPC struct {
	testpb.UnimplementedTestServiceServer
	r *recorder
}

func (g recorderRPC) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	h := http.Header{}
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	method, _ := grpc.Method(ctx)
	host := ""
	if v := md.Get(":authority"); len(v) > 0 {
		host = v[0]
	}
	g.r.add(recorded{grpc: true, host: host, path: method, header: h})
	grpc.SetHeader(ctx, metadata.Pairs("x-resp-remove", "secret"))
}

func (g recorderRPC) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	g.record(ctx)
	return &testpb.SimpleResponse{ServerId: "main"}, nil
}

func (g recorderRPC) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	g.record(ctx)
	return &testpb.Empty{}, nil
}

// TestIstiodRouteActions: a VirtualService's mirror and mirrorPercentage,
// redirect, rewrite (uri and authority) and headers (request set, add and
// remove; response add and remove), as istiod translates them, honoured by
// Weft's HTTP client as Envoy honours them, and on gRPC as grpc-go's xDS
// client does (the oracle beside Weft's gRPC rows).
//
// What Envoy does with istiod's output: a mirror is a
// request_mirror_policy, where "the host/authority header is altered such
// that -shadow is appended" unless disable_shadow_host_suffix_append is
// set, which istiod sets (its DISABLE_SHADOW_HOST_SUFFIX defaults to
// true), so the copies keep their Host; a redirect is answered by
// the proxy with its code and a Location naming the new authority and
// uri; a rewrite sends the new path prefix and Host; headers become the
// route's request_headers_to_add (set overwrites, add appends) and
// _remove, and response_headers_to_add and _remove.
//
// gRPC: grpc-go's xDS client ignores request_mirror_policies, rewrites
// and header changes, and fails a call on a redirect route with
// UNAVAILABLE. Weft's gRPC path mirrors unary calls as its HTTP path
// mirrors requests, and otherwise matches grpc-go.
func TestIstiodRouteActions(t *testing.T) {
	main, shadow := startRecorder(t, "127.0.0.6"), startRecorder(t, "127.0.0.7")
	d := startIstiod(t, fill(routeActionsConfig, map[string]int{
		"main.http": main.httpPort, "main.grpc": main.grpcPort,
		"shadow.http": shadow.httpPort, "shadow.grpc": shadow.grpcPort,
	}))
	client := d.newWorkload(t, "routes-client", "127.0.0.11", "")
	cm := client.mesh(t)
	hc := *cm.HTTPClient()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	const base = "http://routes.mesh.local:8080"
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	do := func(t *testing.T, path string, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if err := eventually(20*time.Second, func() error {
		code, body, err := httpGet(ctx, &hc, base+"/")
		if err == nil && code != http.StatusOK {
			err = statusErr(code, body)
		}
		return err
	}); err != nil {
		t.Fatalf("Weft HTTP never reached routes.mesh.local through istiod: %v", err)
	}
	// waitCopies waits until n copies have reached the mirror and none
	// more arrive.
	waitCopies := func(t *testing.T, atLeast int) []recorded {
		t.Helper()
		last, stable := -1, 0
		deadline := time.Now().Add(20 * time.Second)
		for stable < 10 && time.Now().Before(deadline) {
			n := shadow.count()
			if n == last && n >= atLeast {
				stable++
			} else {
				stable = 0
			}
			last = n
			time.Sleep(20 * time.Millisecond)
		}
		return shadow.take()
	}
	main.take()
	shadow.take()

	t.Run("mirror", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			const n = 20
			for range n {
				if resp := do(t, "/mirror/items"); resp.StatusCode != http.StatusOK {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			copies := waitCopies(t, n)
			if got := len(main.take()); got != n {
				t.Errorf("main saw %d requests; want %d", got, n)
			}
			if len(copies) != n {
				t.Fatalf("mirror saw %d copies; want %d", len(copies), n)
			}
			for _, c := range copies {
				if c.host != "routes.mesh.local:8080" || c.path != "/mirror/items" {
					t.Fatalf("copy: Host %q, path %q; want routes.mesh.local:8080 (no -shadow: istiod disables it), /mirror/items", c.host, c.path)
				}
			}
		})
		for _, g := range client.grpcRows(t, cm, "routes.mesh.local:7070") {
			t.Run(g.name, func(t *testing.T) {
				const n = 10
				for i := range n {
					if _, err := grpcServerID(ctx, g.cc); err != nil {
						t.Fatalf("call %d: %v", i, err)
					}
				}
				want := n
				if g.name == rowGRPCGo {
					want = 0 // grpc-go does not mirror
					time.Sleep(300 * time.Millisecond)
				}
				copies := waitCopies(t, want)
				main.take()
				t.Logf("mirror saw %d of %d calls", len(copies), n)
				if len(copies) != want {
					t.Fatalf("mirror saw %d calls; want %d", len(copies), want)
				}
				for _, c := range copies {
					if !c.grpc || c.host != "routes.mesh.local:7070" || c.path != "/grpc.testing.TestService/UnaryCall" {
						t.Fatalf("copy: gRPC %v, :authority %q, method %q; want routes.mesh.local:7070, UnaryCall", c.grpc, c.host, c.path)
					}
				}
			})
		}
	})

	t.Run("mirrorPercentage 50", func(t *testing.T) {
		const n = 200
		for range n {
			do(t, "/half")
		}
		main.take()
		copies := waitCopies(t, 1)
		t.Logf("%d of %d requests mirrored", len(copies), n)
		// 100 expected; the standard deviation is about 7.
		if len(copies) < 60 || len(copies) > 140 {
			t.Errorf("%d of %d requests mirrored; want about half", len(copies), n)
		}
	})

	t.Run("redirect", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			resp := do(t, "/redirect/x?q=1")
			loc := resp.Header.Get("Location")
			t.Logf("%d Location: %s", resp.StatusCode, loc)
			if resp.StatusCode != http.StatusFound || loc != "http://elsewhere.mesh.local/moved?q=1" {
				t.Errorf("%d Location %q; want 302 http://elsewhere.mesh.local/moved?q=1", resp.StatusCode, loc)
			}
			if n := len(main.take()); n != 0 {
				t.Errorf("main saw %d requests; want none", n)
			}
		})
		// A gRPC call has no redirect route: its method path does not
		// start with /redirect. The HTTP-only row is the row.
	})

	t.Run("rewrite uri and authority", func(t *testing.T) {
		do(t, "/old/items?q=1")
		got := main.take()
		if len(got) != 1 || got[0].path != "/new/items?q=1" || got[0].host != "rewritten.mesh.local" {
			t.Errorf("main saw %+v; want one request for /new/items?q=1 with Host rewritten.mesh.local", got)
		}
	})

	t.Run("headers", func(t *testing.T) {
		t.Run(rowHTTP, func(t *testing.T) {
			resp := do(t, "/headers", "x-set", "caller", "x-add", "caller", "x-remove", "1")
			got := main.take()
			if len(got) != 1 {
				t.Fatalf("main saw %d requests; want 1", len(got))
			}
			h := got[0].header
			for k, want := range map[string][]string{"x-set": {"istio"}, "x-add": {"caller", "istio"}, "x-remove": nil} {
				if g := h.Values(k); !slices.Equal(g, want) {
					t.Errorf("backend saw %s %q; want %q", k, g, want)
				}
			}
			for k, want := range map[string][]string{"x-resp-add": {"istio"}, "x-resp-remove": nil} {
				if g := resp.Header.Values(k); !slices.Equal(g, want) {
					t.Errorf("caller saw %s %q; want %q", k, g, want)
				}
			}
		})
		for _, g := range client.grpcRows(t, cm, "routes.mesh.local:7070") {
			t.Run(g.name, func(t *testing.T) {
				cctx := metadata.AppendToOutgoingContext(ctx, "x-set", "caller", "x-remove", "1")
				var hdr metadata.MD
				if _, err := testpb.NewTestServiceClient(g.cc).EmptyCall(cctx, &testpb.Empty{}, grpc.Header(&hdr)); err != nil {
					t.Fatal(err)
				}
				got := main.take()
				if len(got) != 1 {
					t.Fatalf("main saw %d calls; want 1", len(got))
				}
				// grpc-go applies no header changes; Weft's gRPC path
				// holds to it.
				h := got[0].header
				if !slices.Equal(h.Values("x-set"), []string{"caller"}) || h.Get("x-remove") != "1" || h.Get("x-add") != "" ||
					!slices.Equal(hdr.Get("x-resp-remove"), []string{"secret"}) || len(hdr.Get("x-resp-add")) > 0 {
					t.Errorf("backend saw %v, caller %v; want the call's and the backend's own", h, hdr)
				}
			})
		}
	})

	t.Run("redirect route on gRPC", func(t *testing.T) {
		// The same redirect as a gRPC method route: grpc-go fails the call
		// with UNAVAILABLE, and so does Weft.
		for _, g := range client.grpcRows(t, cm, "routes.mesh.local:7070") {
			t.Run(g.name, func(t *testing.T) {
				err := g.cc.Invoke(ctx, "/redirect.Service/Call", &testpb.Empty{}, &testpb.Empty{})
				if status.Code(err) != codes.Unavailable {
					t.Errorf("call on the redirect route: %v; want UNAVAILABLE", err)
				}
			})
		}
	})
}
