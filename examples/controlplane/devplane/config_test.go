package devplane_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
)

// base is a valid service; cases replace or append lines to make one
// mistake each.
const base = `services:
  - name: orders
    port: 8080
    versions:
      v1: [127.0.0.1:8081]
      v2: [127.0.0.1:8082]
    split: {v1: 80, v2: 20}
`

func TestParseErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // the whole message
	}{
		{"unknown key", base + "    timout: 1s\n",
			`devplane: mesh.yaml:8: services[0]: unknown key "timout" (did you mean "timeout"? known: allowed_spiffe_ids, circuit_breakers, hash_policy, hedge, lb_config, lb_policy, name, outlier_detection, port, retry, routes, split, timeout, versions)`},
		{"unknown top-level key", "servics: []\n",
			`devplane: mesh.yaml:1: unknown key "servics" (did you mean "services"? known: cert_provider_instance, services)`},
		{"weights sum to 0", strings.Replace(base, "split: {v1: 80, v2: 20}", "split:\n      v1: 0\n      v2: 0", 1),
			`devplane: mesh.yaml:7: services[0].split: weights must sum to > 0`},
		{"split names an unknown version", strings.Replace(base, "v2: 20", "v3: 20", 1),
			`devplane: mesh.yaml:7: services[0].split: unknown version "v3"`},
		{"split missing", strings.Replace(base, "    split: {v1: 80, v2: 20}\n", "", 1),
			`devplane: mesh.yaml:4: services[0].split: required when a service has more than one version`},
		{"bad regex", base + "    routes:\n      - headers:\n          - name: x-user\n            regex: \"a(b\"\n        version: v2\n",
			`devplane: mesh.yaml:11: services[0].routes[0].headers[0].regex: bad regex "a(b": error parsing regexp: missing closing ): ` + "`a(b`"},
		{"bad duration", base + "    retry:\n      retry_on: unavailable\n      per_try_timeout: 5 seconds\n",
			`devplane: mesh.yaml:10: services[0].retry.per_try_timeout: bad duration "5 seconds": want a number with a unit, such as 250ms or 2s`},
		{"duplicate service", base + strings.TrimPrefix(base, "services:\n"),
			`devplane: mesh.yaml:8: services[1].name: duplicate service "orders" (also services[0])`},
		{"yaml syntax", "services:\n  - name: orders\n\tport: 8080\n",
			// yaml.v3 places a tab error at the line before the tab.
			`devplane: mesh.yaml:2: found a tab character that violates indentation`},
		{"empty file", "", `devplane: mesh.yaml: empty config: want a mapping with a services key`},
		{"bad address", strings.Replace(base, "127.0.0.1:8082", "127.0.0.1", 1),
			`devplane: mesh.yaml:6: services[0].versions.v2[0]: "127.0.0.1" is not host:port`},
		{"unknown retry condition", base + "    retry:\n      retry_on: 5xx,unavailabel\n",
			`devplane: mesh.yaml:9: services[0].retry.retry_on: unknown retry condition "unavailabel"`},
		{"hedge needs per-try timeout", base + "    hedge: {hedge_on_per_try_timeout: true}\n",
			`devplane: mesh.yaml:8: services[0].hedge.hedge_on_per_try_timeout: needs retry.per_try_timeout`},
		{"duplicate locality", strings.Replace(base, "v2: [127.0.0.1:8082]", "v2:\n        - endpoints: [127.0.0.1:8082]\n        - endpoints: [127.0.0.1:8083]", 1),
			`devplane: mesh.yaml:8: services[0].versions.v2: group 1 has the same locality as group 0 (region "dev", zone "dev", sub_zone ""); give each group its own`},
		{"priority gap", strings.Replace(base, "v2: [127.0.0.1:8082]", "v2:\n        - {endpoints: [127.0.0.1:8082], zone: a}\n        - {endpoints: [127.0.0.1:8083], zone: b, priority: 2}", 1),
			`devplane: mesh.yaml:7: services[0].versions.v2: priorities must run from 0 without gaps (highest is 2, 2 distinct)`},
		{"locality weight 0", strings.Replace(base, "v2: [127.0.0.1:8082]", "v2: {endpoints: [127.0.0.1:8082], weight: 0}", 1),
			`devplane: mesh.yaml:6: services[0].versions.v2.weight: want a whole number from 1 to 4294967295, got "0"`},
		{"port out of range", strings.Replace(base, "port: 8080", "port: 80800", 1),
			`devplane: mesh.yaml:3: services[0].port: want a whole number from 1 to 65535, got "80800"`},
		{"lb_config on a builtin policy", base + "    lb_policy: ring_hash\n    lb_config: {x: 1}\n",
			`devplane: mesh.yaml:8: services[0].lb_config: only a custom lb_policy takes lb_config, not "ring_hash"`},
		{"route without a target", base + "    routes:\n      - path_prefix: /a\n",
			`devplane: mesh.yaml:9: services[0].routes[0]: version or split is required`},
		{"duplicate key", base + "    port: 9090\n",
			`devplane: mesh.yaml:8: services[0].port: duplicate key (first at line 3)`},
		{"bad SPIFFE ID", base + "    allowed_spiffe_ids: [example.org/orders]\n",
			`devplane: mesh.yaml:8: services[0].allowed_spiffe_ids[0]: "example.org/orders" is not a SPIFFE ID (spiffe://trust-domain/path)`},
		{"cluster name collision", "services:\n  - {name: a-b, port: 1, versions: {c: [127.0.0.1:1]}}\n  - {name: a, port: 2, versions: {b-c: [127.0.0.1:2]}}\n",
			`devplane: mesh.yaml:3: services[1].versions.b-c: cluster name "a-b-c" is also produced by services[0].versions.c`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := devplane.Parse([]byte(tt.yaml), "mesh.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded, want %s", tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
			var pe *devplane.ParseError
			if !errors.As(err, &pe) || pe.File != "mesh.yaml" {
				t.Errorf("error %T is not a *ParseError for mesh.yaml", err)
			}
		})
	}
}

func TestParseAcceptsTheExampleFile(t *testing.T) {
	cfg, err := devplane.Load(filepath.Join("..", "mesh.yaml"))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := strings.Join(cfg.Services(), ","); got != "orders,users" {
		t.Errorf("services = %s, want orders,users", got)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := devplane.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "devplane: ") {
		t.Errorf("Load of a missing file: %v, want a devplane: error wrapping os.ErrNotExist", err)
	}
}
