package mesh_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/weftmesh/weft/mesh"
)

// TestAdminRefusesForeignHosts: the admin listener answers only loopback
// names and addresses, its own address and configured hosts, so a page
// reaching it through DNS rebinding (its own name in Host) reads nothing.
func TestAdminRefusesForeignHosts(t *testing.T) {
	admin := freeAddr(t)
	t.Setenv("WEFT_ADMIN_HOSTS", "admin.internal, ops.example:8443")
	newMesh(t, mesh.WithAdminAddr(admin))
	waitListening(t, admin)

	for _, tc := range []struct {
		host string
		want int
	}{
		{"", http.StatusOK}, // the dialled address
		{"localhost", http.StatusOK},
		{"localhost:8080", http.StatusOK},
		{"LocalHost.", http.StatusOK},
		{"127.0.0.1", http.StatusOK},
		{"127.1.2.3:9", http.StatusOK},
		{"[::1]:9901", http.StatusOK},
		{"admin.internal", http.StatusOK},
		{"admin.internal:9901", http.StatusOK},
		{"ops.example", http.StatusOK},
		{"attacker.example", http.StatusMisdirectedRequest},
		{"attacker.example:" + strings.Split(admin, ":")[1], http.StatusMisdirectedRequest},
		{"localhost.attacker.example", http.StatusMisdirectedRequest},
		{"127.0.0.1.nip.io", http.StatusMisdirectedRequest},
		{"10.255.255.1", http.StatusMisdirectedRequest},
		{"admin.internal.attacker.example", http.StatusMisdirectedRequest},
	} {
		t.Run(tc.host, func(t *testing.T) {
			for _, path := range []string{"/healthz", "/config_dump", "/"} {
				req, _ := http.NewRequest(http.MethodGet, "http://"+admin+path, nil)
				if tc.host != "" {
					req.Host = tc.host
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Errorf("GET %s Host %q: status %d, want %d", path, tc.host, resp.StatusCode, tc.want)
				}
				if tc.want != http.StatusOK && !strings.Contains(string(body), "WEFT_ADMIN_HOSTS") {
					t.Errorf("GET %s Host %q: body %.80q does not say how to allow the host", path, tc.host, body)
				}
			}
		})
	}
}

func TestAdminHostsOption(t *testing.T) {
	admin := freeAddr(t)
	newMesh(t, mesh.WithAdminAddr(admin), mesh.WithAdminHosts("weft-admin.svc"))
	waitListening(t, admin)
	for host, want := range map[string]int{"weft-admin.svc": http.StatusOK, "admin.internal": http.StatusMisdirectedRequest} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/healthz", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: status %d, want %d", host, resp.StatusCode, want)
		}
	}

	for _, bad := range []string{"", ",", "a b", "http://x/", "*"} {
		t.Run("WEFT_ADMIN_HOSTS="+bad, func(t *testing.T) {
			t.Setenv("WEFT_ADMIN_HOSTS", bad)
			m, err := mesh.New(context.Background())
			if bad == "" { // unset in effect
				if err != nil {
					t.Fatal(err)
				}
				m.Close()
				return
			}
			var envErr *mesh.EnvError
			if err == nil {
				m.Close()
			}
			if !errors.As(err, &envErr) || envErr.Var != "WEFT_ADMIN_HOSTS" {
				t.Errorf("New: %v, want an *EnvError naming WEFT_ADMIN_HOSTS", err)
			}
		})
	}
	if m, err := mesh.New(context.Background(), mesh.WithAdminHosts("a b")); err == nil {
		m.Close()
		t.Error(`WithAdminHosts("a b"): New succeeded, want an error`)
	}
}
