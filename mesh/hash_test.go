package mesh_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/weftmesh/weft/mesh"
)

// TestLBHashSource: ring_hash and maglev outside xDS place requests by the
// header (WEFT_LB_HASH_HEADER, WithLBHashHeader) or cookie
// (WEFT_LB_HASH_COOKIE, WithLBHashCookie) the mesh names, as an xDS
// route's hash_policy on it would: each user's requests stick to one
// backend, the users spread, and a header places a user on the same
// backend over HTTP and over gRPC (the same policy, endpoints and hash).
// gRPC calls carry no cookies: a cookie source applies to HTTP only.
func TestLBHashSource(t *testing.T) {
	backends := []*parityBackend{startParityBackend(t, "b0"), startParityBackend(t, "b1"), startParityBackend(t, "b2")}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		opts   []mesh.Option
		send   func(user string) []string // header pairs of a user's request
		bothOK bool                       // gRPC is held to it too
	}{
		{name: "ring_hash, header from the environment",
			env:  map[string]string{"WEFT_LB_POLICY": "ring_hash", "WEFT_LB_HASH_HEADER": "x-user"},
			send: func(u string) []string { return []string{"x-user", u} }, bothOK: true},
		{name: "maglev, header from an option",
			opts: []mesh.Option{mesh.WithLBPolicy("maglev"), mesh.WithLBHashHeader("X-User")},
			send: func(u string) []string { return []string{"x-user", u} }, bothOK: true},
		{name: "maglev, cookie from the environment",
			env:  map[string]string{"WEFT_LB_POLICY": "maglev", "WEFT_LB_HASH_COOKIE": "session"},
			send: func(u string) []string { return []string{"cookie", "session=" + u + "; other=1"} }},
		{name: "ring_hash, header and cookie from options",
			opts: []mesh.Option{mesh.WithLBPolicy("ring_hash"), mesh.WithLBHashHeader("x-user"), mesh.WithLBHashCookie("session")},
			send: func(u string) []string { return []string{"x-user", u, "cookie", "session=" + u} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			opts := append([]mesh.Option{mesh.WithEndpoints("svc", addrs(backends...)...)}, tc.opts...)
			m := newMesh(t, opts...)
			clients := []*parityClient{{name: weftHTTP, http: m.HTTPClient()}}
			if tc.bothOK {
				clients = append(clients, &parityClient{name: weftGRPC, hc: dialHealth(t, m, parityHost)})
			}
			const users = 24
			placed := map[string][]string{}
			for _, c := range clients {
				spread := map[string]int{}
				for u := range users {
					user := fmt.Sprintf("user-%d", u)
					seen := map[string]bool{}
					for range 3 {
						o := c.call(callLimit, tc.send(user)...)
						if o.err != nil {
							t.Fatalf("%s: %s: %v", c.name, user, o.err)
						}
						seen[o.backend] = true
					}
					if len(seen) != 1 {
						t.Errorf("%s: %s reached %d backends, want 1", c.name, user, len(seen))
					}
					for b := range seen {
						spread[b]++
						placed[c.name] = append(placed[c.name], b)
					}
				}
				if len(spread) < 2 {
					t.Errorf("%s: %d users all on %v, want them spread", c.name, users, spread)
				}
			}
			if tc.bothOK && strings.Join(placed[weftHTTP], ",") != strings.Join(placed[weftGRPC], ",") {
				t.Errorf("HTTP placed users on %v, gRPC on %v: one header must mean one backend", placed[weftHTTP], placed[weftGRPC])
			}
		})
	}
}

// TestLBHashEnv: a bad hash source is refused, naming the variable or
// option; so is one with a policy that does not hash.
func TestLBHashEnv(t *testing.T) {
	for _, tc := range []struct {
		env     map[string]string
		culprit string
	}{
		{map[string]string{"WEFT_LB_POLICY": "ring_hash", "WEFT_LB_HASH_HEADER": "x user"}, "WEFT_LB_HASH_HEADER"},
		{map[string]string{"WEFT_LB_POLICY": "ring_hash", "WEFT_LB_HASH_HEADER": "x-trace-bin"}, "WEFT_LB_HASH_HEADER"},
		{map[string]string{"WEFT_LB_POLICY": "ring_hash", "WEFT_LB_HASH_HEADER": ":path"}, "WEFT_LB_HASH_HEADER"},
		{map[string]string{"WEFT_LB_POLICY": "maglev", "WEFT_LB_HASH_COOKIE": "a;b"}, "WEFT_LB_HASH_COOKIE"},
		{map[string]string{"WEFT_LB_HASH_HEADER": "x-user"}, "WEFT_LB_HASH_HEADER"}, // round_robin does not hash
		{map[string]string{"WEFT_LB_POLICY": "least_request", "WEFT_LB_HASH_COOKIE": "s"}, "WEFT_LB_HASH_COOKIE"},
	} {
		t.Run(tc.culprit, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			m, err := mesh.New(t.Context())
			if err == nil {
				m.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.culprit) {
				t.Errorf("New with %v: error %v, want one naming %s", tc.env, err, tc.culprit)
			}
		})
	}
	for _, tc := range []struct {
		opts    []mesh.Option
		culprit string
	}{
		{[]mesh.Option{mesh.WithLBPolicy("ring_hash"), mesh.WithLBHashHeader("")}, "WithLBHashHeader"},
		{[]mesh.Option{mesh.WithLBPolicy("ring_hash"), mesh.WithLBHashCookie("a=b")}, "WithLBHashCookie"},
		{[]mesh.Option{mesh.WithLBHashHeader("x-user")}, "WithLBHashHeader"},
	} {
		m, err := mesh.New(t.Context(), tc.opts...)
		if err == nil {
			m.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.culprit) {
			t.Errorf("New: error %v, want one naming %s", err, tc.culprit)
		}
	}
}
