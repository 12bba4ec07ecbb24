package devplane

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Config is a parsed and validated mesh description. It is immutable, so
// one Config may be applied to several servers from any goroutine. Build one
// with [Load] or [Parse].
type Config struct {
	file         string
	certProvider string
	services     []*service
}

// Services returns the service names in the order the file declares them.
func (c *Config) Services() []string {
	out := make([]string, len(c.services))
	for i, s := range c.services {
		out[i] = s.name
	}
	return out
}

// DefaultCertProviderInstance is the certificate provider instance that
// upstream TLS refers to when the config does not name one. It must exist
// in the clients' bootstrap (certificate_providers) when a service sets
// allowed_spiffe_ids; Istio uses the same name.
const DefaultCertProviderInstance = "default"

// DefaultRegion and DefaultZone are the locality of endpoint groups that
// name none, and the locality BootstrapJSON gives the client's node, so a
// locality-aware client treats such endpoints as local.
const (
	DefaultRegion = "dev"
	DefaultZone   = "dev"
)

type service struct {
	name     string
	port     uint32
	versions []*version
	split    []target // the catch-all route's targets
	routes   []*route
	timeout  time.Duration
	retry    *retryPolicy
	hedge    *hedgePolicy
	cb       *circuitBreakers
	outlier  *outlierDetection
	lb       string
	lbConfig *structpb.Struct
	hash     []hashPolicy
	spiffe   []string
}

type version struct {
	name   string
	groups []*group
}

type group struct {
	addrs                 []hostPort
	region, zone, subZone string
	priority              uint32
	weight                uint32
	line                  int
	hasLocality           bool // else DefaultRegion/DefaultZone
}

type hostPort struct {
	host string
	port uint32
}

type target struct {
	version string
	weight  uint32
	line    int
}

type route struct {
	name       string
	pathPrefix string
	headers    []headerMatch
	targets    []target
	timeout    time.Duration
	retry      *retryPolicy
}

type headerMatch struct {
	name    string
	kind    string // exact, prefix, suffix, regex, present
	value   string
	present bool
	invert  bool
}

type retryPolicy struct {
	retryOn       []string
	numRetries    uint32
	perTryTimeout time.Duration
	baseInterval  time.Duration
	maxInterval   time.Duration
}

type hedgePolicy struct {
	onPerTryTimeout bool
	initialRequests uint32
}

type circuitBreakers struct {
	maxConnections, maxRequests, maxPendingRequests, maxRetries *uint32
}

type outlierDetection struct {
	consecutive5xx                                  *uint32
	interval, baseEjectionTime, maxEjectionTime     time.Duration
	maxEjectionPercent                              *uint32
	failurePercentageThreshold                      *uint32
	failurePercentageMinHosts, failurePercentageVol *uint32
}

type hashPolicy struct {
	kind     string // header, cookie, query_parameter, source_ip, channel_id
	name     string
	terminal bool
}

// ParseError is a mistake in a config file: the file, the 1-based line,
// and the path of the offending value (services[0].split).
type ParseError struct {
	File string
	Line int
	// Path is empty for a YAML syntax error.
	Path string
	Err  error
}

// Error formats the error as "devplane: file:line: path: message".
func (e *ParseError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Path == "" {
		return fmt.Sprintf("devplane: %s: %v", loc, e.Err)
	}
	return fmt.Sprintf("devplane: %s: %s: %v", loc, e.Path, e.Err)
}

// Unwrap returns the underlying error.
func (e *ParseError) Unwrap() error { return e.Err }

// Load reads and parses the config file at path. Errors name the file by
// its base name and the line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("devplane: %w", err)
	}
	return Parse(data, filepath.Base(path))
}

// yamlLine matches the position yaml.v3 puts in its syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// Parse parses a config; name is the file name errors report. An error is
// a *ParseError.
func Parse(data []byte, name string) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		pe := &ParseError{File: name, Err: err}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			pe.Line, _ = strconv.Atoi(m[1])
			pe.Err = errors.New(m[2])
		}
		return nil, pe
	}
	// An empty document is refused rather than read as "no services":
	// an editor that truncates a file before writing it would otherwise
	// wipe the mesh for a moment.
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, &ParseError{File: name, Err: errors.New("empty config: want a mapping with a services key")}
	}
	d := &decoder{file: name}
	cfg := &Config{file: name, certProvider: DefaultCertProviderInstance}
	root := resolve(doc.Content[0])
	var servicesSeen bool
	err := d.fields(root, "", map[string]fieldFunc{
		"cert_provider_instance": func(k, v *yaml.Node, p string) (err error) {
			cfg.certProvider, err = d.name(v, p)
			return err
		},
		"services": func(k, v *yaml.Node, p string) error {
			servicesSeen = true
			return d.seq(v, p, func(i int, n *yaml.Node, p string) error {
				s, err := d.service(n, p)
				if err != nil {
					return err
				}
				cfg.services = append(cfg.services, s)
				return nil
			})
		},
	})
	if err != nil {
		return nil, err
	}
	if !servicesSeen {
		return nil, d.errf(root, "", "services is required")
	}
	if err := d.crossCheck(root, cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// crossCheck finds collisions between services: names, and cluster names,
// since "a-b" version "c" and "a" version "b-c" would share a cluster.
func (d *decoder) crossCheck(root *yaml.Node, cfg *Config) error {
	names := map[string]int{}
	clusters := map[string]string{}
	for i, s := range cfg.services {
		p := fmt.Sprintf("services[%d]", i)
		if j, ok := names[s.name]; ok {
			return d.errLine(d.lineOf(root, "services", i, "name"), p+".name", "duplicate service %q (also services[%d])", s.name, j)
		}
		names[s.name] = i
		for _, v := range s.versions {
			c := clusterName(s.name, v.name)
			if other, ok := clusters[c]; ok {
				return d.errLine(d.lineOf(root, "services", i, "versions"), p+".versions."+v.name, "cluster name %q is also produced by %s", c, other)
			}
			clusters[c] = p + ".versions." + v.name
		}
	}
	return nil
}

// lineOf finds the line of key inside the idx-th element of the sequence
// under seqKey of root, for errors found after decoding.
func (d *decoder) lineOf(root *yaml.Node, seqKey string, idx int, key string) int {
	seq := mapValue(root, seqKey)
	if seq == nil || idx >= len(seq.Content) {
		return root.Line
	}
	el := resolve(seq.Content[idx])
	for i := 0; i+1 < len(el.Content); i += 2 {
		if el.Content[i].Value == key {
			return el.Content[i].Line
		}
	}
	return el.Line
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = resolve(n)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return resolve(n.Content[i+1])
		}
	}
	return nil
}

func (d *decoder) service(n *yaml.Node, path string) (*service, error) {
	s := &service{lb: "round_robin"}
	var versionsKey *yaml.Node
	var lbKey, hedgeKey *yaml.Node
	err := d.fields(n, path, map[string]fieldFunc{
		"name": func(k, v *yaml.Node, p string) (err error) { s.name, err = d.name(v, p); return err },
		"port": func(k, v *yaml.Node, p string) (err error) { s.port, err = d.uint32(v, p, 1, 65535); return err },
		"versions": func(k, v *yaml.Node, p string) error {
			versionsKey = k
			return d.versions(s, k, v, p)
		},
		"split": func(k, v *yaml.Node, p string) (err error) {
			s.split, err = d.split(k, v, p)
			return err
		},
		"routes": func(k, v *yaml.Node, p string) error {
			return d.seq(v, p, func(i int, n *yaml.Node, p string) error {
				r, err := d.route(n, p)
				if err != nil {
					return err
				}
				s.routes = append(s.routes, r)
				return nil
			})
		},
		"timeout": func(k, v *yaml.Node, p string) (err error) { s.timeout, err = d.duration(v, p); return err },
		"retry":   func(k, v *yaml.Node, p string) (err error) { s.retry, err = d.retry(v, p); return err },
		"hedge": func(k, v *yaml.Node, p string) (err error) {
			hedgeKey = k
			s.hedge, err = d.hedge(v, p)
			return err
		},
		"circuit_breakers": func(k, v *yaml.Node, p string) (err error) {
			s.cb, err = d.circuitBreakers(v, p)
			return err
		},
		"outlier_detection": func(k, v *yaml.Node, p string) (err error) {
			s.outlier, err = d.outlier(v, p)
			return err
		},
		"lb_policy": func(k, v *yaml.Node, p string) (err error) {
			lbKey = k
			s.lb, err = d.lbPolicy(v, p)
			return err
		},
		"lb_config": func(k, v *yaml.Node, p string) error {
			if v.Kind != yaml.MappingNode {
				return d.errf(v, p, "want a mapping, got %s", kindName(v))
			}
			var m map[string]any
			if err := v.Decode(&m); err != nil {
				return d.errf(v, p, "%v", err)
			}
			st, err := structpb.NewStruct(m)
			if err != nil {
				return d.errf(v, p, "%v", err)
			}
			s.lbConfig = st
			return nil
		},
		"hash_policy": func(k, v *yaml.Node, p string) error {
			return d.seq(v, p, func(i int, n *yaml.Node, p string) error {
				h, err := d.hashPolicy(n, p)
				if err != nil {
					return err
				}
				s.hash = append(s.hash, h)
				return nil
			})
		},
		"allowed_spiffe_ids": func(k, v *yaml.Node, p string) error {
			return d.seq(v, p, func(i int, n *yaml.Node, p string) error {
				id, err := d.str(n, p)
				if err != nil {
					return err
				}
				if !strings.HasPrefix(id, "spiffe://") || len(id) == len("spiffe://") {
					return d.errf(n, p, "%q is not a SPIFFE ID (spiffe://trust-domain/path)", id)
				}
				s.spiffe = append(s.spiffe, id)
				return nil
			})
		},
	})
	if err != nil {
		return nil, err
	}
	switch {
	case s.name == "":
		return nil, d.errf(n, path, "name is required")
	case s.port == 0:
		return nil, d.errf(n, path, "port is required")
	case len(s.versions) == 0:
		return nil, d.errf(n, path, "versions is required")
	}
	if s.split == nil {
		if len(s.versions) > 1 {
			return nil, d.errf(versionsKey, path+".split", "required when a service has more than one version")
		}
		s.split = []target{{version: s.versions[0].name, weight: 1, line: versionsKey.Line}}
	}
	if err := d.checkTargets(s, s.split, path+".split"); err != nil {
		return nil, err
	}
	for i, r := range s.routes {
		if err := d.checkTargets(s, r.targets, fmt.Sprintf("%s.routes[%d]", path, i)); err != nil {
			return nil, err
		}
	}
	if s.lbConfig != nil && !isCustomLB(s.lb) {
		line := n.Line
		if lbKey != nil {
			line = lbKey.Line
		}
		return nil, d.errLine(line, path+".lb_config", "only a custom lb_policy takes lb_config, not %q", s.lb)
	}
	if s.hedge != nil && s.hedge.onPerTryTimeout && (s.retry == nil || s.retry.perTryTimeout == 0) {
		return nil, d.errf(hedgeKey, path+".hedge.hedge_on_per_try_timeout", "needs retry.per_try_timeout")
	}
	return s, nil
}

func (d *decoder) checkTargets(s *service, ts []target, path string) error {
	for _, t := range ts {
		if !slices.ContainsFunc(s.versions, func(v *version) bool { return v.name == t.version }) {
			return d.errLine(t.line, path, "unknown version %q", t.version)
		}
	}
	return nil
}

// versions decodes `versions: {v1: [addr, ...], v2: {endpoints: [...], zone: b}}`
// where a version is a list of addresses, one endpoint group, or a list of
// groups.
func (d *decoder) versions(s *service, k, n *yaml.Node, path string) error {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		return d.errf(k, path, "want a non-empty mapping of version to endpoints, got %s", kindName(n))
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		vk, vv := n.Content[i], resolve(n.Content[i+1])
		p := join(path, vk.Value)
		name, err := d.name(vk, p)
		if err != nil {
			return err
		}
		if seen[name] {
			return d.errf(vk, p, "duplicate version")
		}
		seen[name] = true
		v := &version{name: name}
		switch {
		case vv.Kind == yaml.MappingNode:
			g, err := d.group(vv, p)
			if err != nil {
				return err
			}
			v.groups = []*group{g}
		case vv.Kind == yaml.SequenceNode && len(vv.Content) > 0 && resolve(vv.Content[0]).Kind == yaml.MappingNode:
			err = d.seq(vv, p, func(_ int, n *yaml.Node, p string) error {
				g, err := d.group(n, p)
				v.groups = append(v.groups, g)
				return err
			})
		case vv.Kind == yaml.SequenceNode:
			g := &group{line: vv.Line, weight: 1}
			g.addrs, err = d.addrs(vv, p)
			v.groups = []*group{g}
		default:
			err = d.errf(vv, p, "want a list of host:port, an endpoint group or a list of groups, got %s", kindName(vv))
		}
		if err != nil {
			return err
		}
		if err := d.checkGroups(v, p); err != nil {
			return err
		}
		s.versions = append(s.versions, v)
	}
	return nil
}

func (d *decoder) addrs(n *yaml.Node, path string) ([]hostPort, error) {
	var out []hostPort
	err := d.seq(n, path, func(_ int, n *yaml.Node, p string) error {
		s, err := d.str(n, p)
		if err != nil {
			return err
		}
		host, port, err := net.SplitHostPort(s)
		if err != nil || host == "" {
			return d.errf(n, p, "%q is not host:port", s)
		}
		pv, err := strconv.ParseUint(port, 10, 16)
		if err != nil || pv == 0 {
			return d.errf(n, p, "%q: port must be from 1 to 65535", s)
		}
		out = append(out, hostPort{host: host, port: uint32(pv)})
		return nil
	})
	if err == nil && len(out) == 0 {
		err = d.errf(n, path, "no endpoints")
	}
	return out, err
}

func (d *decoder) group(n *yaml.Node, path string) (*group, error) {
	g := &group{line: n.Line, weight: 1}
	err := d.fields(n, path, map[string]fieldFunc{
		"endpoints": func(k, v *yaml.Node, p string) (err error) { g.addrs, err = d.addrs(v, p); return err },
		"region": func(k, v *yaml.Node, p string) (err error) {
			g.hasLocality = true
			g.region, err = d.str(v, p)
			return err
		},
		"zone": func(k, v *yaml.Node, p string) (err error) {
			g.hasLocality = true
			g.zone, err = d.str(v, p)
			return err
		},
		"sub_zone": func(k, v *yaml.Node, p string) (err error) {
			g.hasLocality = true
			g.subZone, err = d.str(v, p)
			return err
		},
		"priority": func(k, v *yaml.Node, p string) (err error) {
			g.priority, err = d.uint32(v, p, 0, 1000)
			return err
		},
		// grpc-go refuses a locality of weight 0, so the minimum is 1.
		"weight": func(k, v *yaml.Node, p string) (err error) {
			g.weight, err = d.uint32(v, p, 1, math.MaxUint32)
			return err
		},
	})
	if err != nil {
		return nil, err
	}
	if g.addrs == nil {
		return nil, d.errf(n, path, "endpoints is required")
	}
	return g, nil
}

// checkGroups enforces what clients check in a load assignment: distinct
// localities, distinct addresses, and priorities 0..N without gaps.
func (d *decoder) checkGroups(v *version, path string) error {
	type loc struct{ r, z, s string }
	locs := map[loc]int{}
	addrs := map[hostPort]bool{}
	prios := map[uint32]bool{}
	maxPrio := uint32(0)
	for i, g := range v.groups {
		if !g.hasLocality {
			g.region, g.zone = DefaultRegion, DefaultZone
		}
		l := loc{g.region, g.zone, g.subZone}
		if j, dup := locs[l]; dup {
			return d.errLine(g.line, path, "group %d has the same locality as group %d (region %q, zone %q, sub_zone %q); give each group its own", i, j, l.r, l.z, l.s)
		}
		locs[l] = i
		for _, a := range g.addrs {
			if addrs[a] {
				return d.errLine(g.line, path, "endpoint %s is listed twice", addrString(a))
			}
			addrs[a] = true
		}
		prios[g.priority] = true
		maxPrio = max(maxPrio, g.priority)
	}
	if int(maxPrio)+1 != len(prios) {
		return d.errLine(v.groups[0].line, path, "priorities must run from 0 without gaps (highest is %d, %d distinct)", maxPrio, len(prios))
	}
	return nil
}

func (d *decoder) split(k, n *yaml.Node, path string) ([]target, error) {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		return nil, d.errf(k, path, "want a mapping of version to weight, got %s", kindName(n))
	}
	var out []target
	var total uint64
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		vk, vv := n.Content[i], resolve(n.Content[i+1])
		p := join(path, vk.Value)
		if seen[vk.Value] {
			return nil, d.errf(vk, p, "duplicate version")
		}
		seen[vk.Value] = true
		w, err := d.uint32(vv, p, 0, math.MaxUint32)
		if err != nil {
			return nil, err
		}
		total += uint64(w)
		out = append(out, target{version: vk.Value, weight: w, line: vk.Line})
	}
	if total == 0 {
		return nil, d.errf(k, path, "weights must sum to > 0")
	}
	if total > math.MaxUint32 {
		return nil, d.errf(k, path, "weights sum to %d, above %d", total, uint64(math.MaxUint32))
	}
	return out, nil
}

func (d *decoder) route(n *yaml.Node, path string) (*route, error) {
	r := &route{}
	err := d.fields(n, path, map[string]fieldFunc{
		"name": func(k, v *yaml.Node, p string) (err error) { r.name, err = d.str(v, p); return err },
		"path_prefix": func(k, v *yaml.Node, p string) (err error) {
			r.pathPrefix, err = d.str(v, p)
			if err == nil && !strings.HasPrefix(r.pathPrefix, "/") {
				err = d.errf(v, p, "%q must start with /", r.pathPrefix)
			}
			return err
		},
		"headers": func(k, v *yaml.Node, p string) error {
			return d.seq(v, p, func(_ int, n *yaml.Node, p string) error {
				h, err := d.header(n, p)
				r.headers = append(r.headers, h)
				return err
			})
		},
		"version": func(k, v *yaml.Node, p string) error {
			if r.targets != nil {
				return d.errf(k, p, "set either version or split, not both")
			}
			name, err := d.str(v, p)
			r.targets = []target{{version: name, weight: 1, line: v.Line}}
			return err
		},
		"split": func(k, v *yaml.Node, p string) (err error) {
			if r.targets != nil {
				return d.errf(k, p, "set either version or split, not both")
			}
			r.targets, err = d.split(k, v, p)
			return err
		},
		"timeout": func(k, v *yaml.Node, p string) (err error) { r.timeout, err = d.duration(v, p); return err },
		"retry":   func(k, v *yaml.Node, p string) (err error) { r.retry, err = d.retry(v, p); return err },
	})
	if err != nil {
		return nil, err
	}
	if r.targets == nil {
		return nil, d.errf(n, path, "version or split is required")
	}
	if r.pathPrefix == "" && len(r.headers) == 0 {
		return nil, d.errf(n, path, "path_prefix or headers is required (the service's split already takes every other request)")
	}
	if r.pathPrefix == "" {
		r.pathPrefix = "/"
	}
	return r, nil
}

func (d *decoder) header(n *yaml.Node, path string) (headerMatch, error) {
	h := headerMatch{}
	var kindKey *yaml.Node
	set := func(kind string) fieldFunc {
		return func(k, v *yaml.Node, p string) (err error) {
			if kindKey != nil {
				return d.errf(k, p, "only one of exact, prefix, suffix, regex, present (already %s)", h.kind)
			}
			kindKey, h.kind = k, kind
			if kind == "present" {
				h.present, err = d.bool(v, p)
				return err
			}
			// Scalars are taken as written, so `exact: true` means "true".
			h.value, err = d.str(v, p)
			if err == nil && kind == "regex" {
				if _, rerr := regexp.Compile(h.value); rerr != nil {
					err = d.errf(v, p, "bad regex %q: %v", h.value, rerr)
				}
			}
			return err
		}
	}
	err := d.fields(n, path, map[string]fieldFunc{
		"name": func(k, v *yaml.Node, p string) (err error) {
			h.name, err = d.str(v, p)
			if err == nil && (h.name == "" || strings.ContainsAny(h.name, " \t:")) && !strings.HasPrefix(h.name, ":") {
				err = d.errf(v, p, "%q is not a header name", h.name)
			}
			return err
		},
		"exact":   set("exact"),
		"prefix":  set("prefix"),
		"suffix":  set("suffix"),
		"regex":   set("regex"),
		"present": set("present"),
		"invert":  func(k, v *yaml.Node, p string) (err error) { h.invert, err = d.bool(v, p); return err },
	})
	if err != nil {
		return h, err
	}
	if h.name == "" {
		return h, d.errf(n, path, "name is required")
	}
	if kindKey == nil {
		return h, d.errf(n, path, "one of exact, prefix, suffix, regex, present is required")
	}
	return h, nil
}

// retryOn is Envoy's retry_on vocabulary plus gRPC's status names; a typo
// would otherwise silently disable retries.
var retryOn = map[string]bool{
	"5xx": true, "gateway-error": true, "reset": true, "reset-before-request": true,
	"connect-failure": true, "envoy-ratelimited": true, "retriable-4xx": true, "refused-stream": true,
	"retriable-status-codes": true, "retriable-headers": true, "http3-post-connect-failure": true,
	"cancelled": true, "deadline-exceeded": true, "internal": true, "resource-exhausted": true, "unavailable": true,
}

func (d *decoder) retry(n *yaml.Node, path string) (*retryPolicy, error) {
	r := &retryPolicy{numRetries: 1}
	err := d.fields(n, path, map[string]fieldFunc{
		"retry_on": func(k, v *yaml.Node, p string) error {
			var items []*yaml.Node
			if v.Kind == yaml.SequenceNode {
				items = v.Content
			} else {
				items = []*yaml.Node{v}
			}
			for _, it := range items {
				s, err := d.str(resolve(it), p)
				if err != nil {
					return err
				}
				for _, c := range strings.Split(s, ",") {
					c = strings.TrimSpace(c)
					if !retryOn[c] {
						return d.errf(it, p, "unknown retry condition %q", c)
					}
					r.retryOn = append(r.retryOn, c)
				}
			}
			return nil
		},
		"num_retries":     func(k, v *yaml.Node, p string) (err error) { r.numRetries, err = d.uint32(v, p, 1, 100); return err },
		"per_try_timeout": func(k, v *yaml.Node, p string) (err error) { r.perTryTimeout, err = d.duration(v, p); return err },
		"base_interval":   func(k, v *yaml.Node, p string) (err error) { r.baseInterval, err = d.duration(v, p); return err },
		"max_interval":    func(k, v *yaml.Node, p string) (err error) { r.maxInterval, err = d.duration(v, p); return err },
	})
	if err != nil {
		return nil, err
	}
	if len(r.retryOn) == 0 {
		return nil, d.errf(n, path, "retry_on is required")
	}
	if r.maxInterval != 0 && r.baseInterval == 0 {
		return nil, d.errf(n, path+".max_interval", "needs base_interval")
	}
	if r.maxInterval != 0 && r.maxInterval < r.baseInterval {
		return nil, d.errf(n, path+".max_interval", "%v is below base_interval %v", r.maxInterval, r.baseInterval)
	}
	return r, nil
}

func (d *decoder) hedge(n *yaml.Node, path string) (*hedgePolicy, error) {
	h := &hedgePolicy{initialRequests: 1}
	err := d.fields(n, path, map[string]fieldFunc{
		"hedge_on_per_try_timeout": func(k, v *yaml.Node, p string) (err error) {
			h.onPerTryTimeout, err = d.bool(v, p)
			return err
		},
		"initial_requests": func(k, v *yaml.Node, p string) (err error) {
			h.initialRequests, err = d.uint32(v, p, 1, 10)
			return err
		},
	})
	return h, err
}

func (d *decoder) circuitBreakers(n *yaml.Node, path string) (*circuitBreakers, error) {
	c := &circuitBreakers{}
	err := d.fields(n, path, map[string]fieldFunc{
		"max_connections": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&c.maxConnections, v, p, 1, math.MaxUint32)
		},
		"max_requests": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&c.maxRequests, v, p, 1, math.MaxUint32)
		},
		"max_pending_requests": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&c.maxPendingRequests, v, p, 0, math.MaxUint32)
		},
		"max_retries": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&c.maxRetries, v, p, 0, math.MaxUint32)
		},
	})
	return c, err
}

func (d *decoder) outlier(n *yaml.Node, path string) (*outlierDetection, error) {
	o := &outlierDetection{}
	err := d.fields(n, path, map[string]fieldFunc{
		"consecutive_5xx": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&o.consecutive5xx, v, p, 1, math.MaxUint32)
		},
		"interval":           func(k, v *yaml.Node, p string) (err error) { o.interval, err = d.duration(v, p); return err },
		"base_ejection_time": func(k, v *yaml.Node, p string) (err error) { o.baseEjectionTime, err = d.duration(v, p); return err },
		"max_ejection_time":  func(k, v *yaml.Node, p string) (err error) { o.maxEjectionTime, err = d.duration(v, p); return err },
		"max_ejection_percent": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&o.maxEjectionPercent, v, p, 0, 100)
		},
		"failure_percentage_threshold": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&o.failurePercentageThreshold, v, p, 0, 100)
		},
		"failure_percentage_minimum_hosts": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&o.failurePercentageMinHosts, v, p, 0, math.MaxUint32)
		},
		"failure_percentage_request_volume": func(k, v *yaml.Node, p string) error {
			return d.uint32p(&o.failurePercentageVol, v, p, 0, math.MaxUint32)
		},
	})
	return o, err
}

// builtinLB are the policies with their own xDS representation.
var builtinLB = map[string]bool{"round_robin": true, "least_request": true, "ring_hash": true, "maglev": true, "random": true}

// lbNameRE is a custom policy's name: it becomes part of a type URL and a
// grpc-go balancer name.
var lbNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

func isCustomLB(name string) bool { return !builtinLB[name] }

func (d *decoder) lbPolicy(n *yaml.Node, path string) (string, error) {
	s, err := d.str(n, path)
	if err != nil {
		return "", err
	}
	if !lbNameRE.MatchString(s) {
		return "", d.errf(n, path, "%q is not a policy name (round_robin, least_request, ring_hash, maglev, random, or a Weft policy such as p2c_ewma)", s)
	}
	return s, nil
}

func (d *decoder) hashPolicy(n *yaml.Node, path string) (hashPolicy, error) {
	h := hashPolicy{}
	named := func(kind string) fieldFunc {
		return func(k, v *yaml.Node, p string) (err error) {
			if h.kind != "" {
				return d.errf(k, p, "only one of header, cookie, query_parameter, source_ip, channel_id (already %s)", h.kind)
			}
			h.kind = kind
			h.name, err = d.str(v, p)
			return err
		}
	}
	flag := func(kind string) fieldFunc {
		return func(k, v *yaml.Node, p string) error {
			if h.kind != "" {
				return d.errf(k, p, "only one of header, cookie, query_parameter, source_ip, channel_id (already %s)", h.kind)
			}
			on, err := d.bool(v, p)
			if err == nil && !on {
				err = d.errf(v, p, "only true is meaningful")
			}
			h.kind = kind
			return err
		}
	}
	err := d.fields(n, path, map[string]fieldFunc{
		"header":          named("header"),
		"cookie":          named("cookie"),
		"query_parameter": named("query_parameter"),
		"source_ip":       flag("source_ip"),
		"channel_id":      flag("channel_id"),
		"terminal":        func(k, v *yaml.Node, p string) (err error) { h.terminal, err = d.bool(v, p); return err },
	})
	if err == nil && h.kind == "" {
		err = d.errf(n, path, "one of header, cookie, query_parameter, source_ip, channel_id is required")
	}
	return h, err
}
