package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/fileutil"
	"github.com/weftmesh/weft/internal/suggest"
	"github.com/weftmesh/weft/resolver"
	"github.com/weftmesh/weft/security"
	"github.com/weftmesh/weft/telemetry/admin"
)

// The environment variables New reads. A bad value is an error naming the
// variable and the value.
const (
	EnvBootstrap       = "GRPC_XDS_BOOTSTRAP"
	EnvBootstrapConfig = "GRPC_XDS_BOOTSTRAP_CONFIG"
	EnvServiceName     = "WEFT_SERVICE_NAME"
	EnvOTelServiceName = "OTEL_SERVICE_NAME"
	EnvEndpoints       = "WEFT_ENDPOINTS"
	EnvDNS             = "WEFT_DNS"
	EnvDNSRefresh      = "WEFT_DNS_REFRESH"
	EnvLBPolicy        = "WEFT_LB_POLICY"
	EnvSPIFFESocket    = "SPIFFE_ENDPOINT_SOCKET"
	EnvSVIDCertFile    = "WEFT_SVID_CERT_FILE"
	EnvSVIDKeyFile     = "WEFT_SVID_KEY_FILE"
	EnvBundleFile      = "WEFT_BUNDLE_FILE"
	EnvMTLS            = "WEFT_MTLS"
	EnvAuthzPolicy     = "WEFT_AUTHZ_POLICY"
	// EnvNamespace and EnvWorkloadLabels place the workload for the
	// authorization policy file: policies of other namespaces, and those
	// whose selector or targetRefs name other workloads, do not apply.
	EnvNamespace      = "WEFT_NAMESPACE"
	EnvPodNamespace   = "POD_NAMESPACE"
	EnvWorkloadLabels = "WEFT_WORKLOAD_LABELS"
	EnvAdminAddr      = "WEFT_ADMIN_ADDR"
	EnvAdminPprof     = "WEFT_ADMIN_PPROF"
	// EnvAdminHosts lists the Host values the admin listener answers
	// besides localhost, loopback addresses and its own address.
	EnvAdminHosts      = "WEFT_ADMIN_HOSTS"
	EnvHTTPProtocol    = "WEFT_HTTP_PROTOCOL"
	EnvShutdownTimeout = "WEFT_SHUTDOWN_TIMEOUT"
	EnvRetryOn         = "WEFT_RETRY_ON"
	EnvRetries         = "WEFT_RETRIES"
	EnvPerTryTimeout   = "WEFT_PER_TRY_TIMEOUT"
	EnvTimeout         = "WEFT_TIMEOUT"
	EnvOutlierErrors   = "WEFT_OUTLIER_CONSECUTIVE_ERRORS"
	EnvXDSDelta        = "WEFT_XDS_DELTA"
)

// knownEnv lists every WEFT_* variable Weft reads, for the warning about
// the others (a misspelt name is otherwise ignored in silence).
var knownEnv = []string{
	EnvServiceName, EnvEndpoints, EnvDNS, EnvDNSRefresh, EnvLBPolicy,
	EnvSVIDCertFile, EnvSVIDKeyFile, EnvBundleFile, EnvMTLS, EnvAuthzPolicy,
	EnvNamespace, EnvWorkloadLabels, EnvAdminAddr, EnvAdminPprof, EnvAdminHosts,
	EnvHTTPProtocol, EnvShutdownTimeout, EnvRetryOn, EnvRetries,
	EnvPerTryTimeout, EnvTimeout, EnvOutlierErrors, EnvXDSDelta,
	EnvHedgeDelay, EnvHedgeMax, EnvBreaker, EnvRateLimit,
	EnvLocality, EnvSlowStartWindow, EnvSessionCookie, EnvSessionCookieTTL,
	EnvLBHashHeader, EnvLBHashCookie,
	// Read by IstioBootstrapFromEnv.
	"WEFT_ISTIO_XDS_ADDRESS", "WEFT_ISTIO_CERT_DIR",
}

// unknownEnv returns a warning for each WEFT_* variable of environ
// ("NAME=value" entries, as os.Environ gives them) that Weft does not
// read, naming the closest one it does.
func unknownEnv(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "WEFT_") || slices.Contains(knownEnv, name) {
			continue
		}
		msg := "mesh: " + name + " is not a variable Weft reads; it is ignored"
		if best, ok := suggest.Closest(name, knownEnv); ok {
			msg += " (did you mean " + best + "?)"
		}
		out = append(out, msg)
	}
	slices.Sort(out)
	return out
}

// Bounds on the numbers the variables and options take. A value outside
// them is a typo or a unit slip, never a setting: a NaN rate refused every
// request, an infinite one none, and a DNS refresh of 1ns looked every
// name up in a loop.
const (
	// minDuration is the shortest timeout, delay or window accepted.
	minDuration = time.Millisecond
	// minDNSRefresh is the shortest DNS refresh interval: each refresh
	// looks every DNS-discovered name up again.
	minDNSRefresh = time.Second
	// minCookieTTL is the shortest session cookie lifetime other than 0
	// (a session cookie): Max-Age counts whole seconds, and 0 would
	// delete the cookie.
	minCookieTTL = time.Second
	// minRate and maxRate bound a rate limit in requests per second: one
	// request in about 17 minutes, and a billion a second, beyond which
	// a limit limits nothing.
	minRate = 1e-3
	maxRate = 1e9
	// maxBurst bounds a rate limit's burst likewise.
	maxBurst = 1_000_000_000
)

// checkDuration refuses d when it is below floor; what names the value.
func checkDuration(d, floor time.Duration) error {
	if d < floor {
		return fmt.Errorf("%v is below the minimum of %v", d, floor)
	}
	return nil
}

// parseDuration parses a Go duration of at least floor; example shows the
// form wanted, for the error.
func parseDuration(v string, floor time.Duration, example string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("want a duration such as %s", example)
	}
	if err := checkDuration(d, floor); err != nil {
		return 0, fmt.Errorf("%w (want a duration such as %s)", err, example)
	}
	return d, nil
}

// checkRate refuses a rate limit that is not a finite number of requests
// per second within [minRate, maxRate].
func checkRate(r float64) error {
	if math.IsNaN(r) || math.IsInf(r, 0) || r < minRate || r > maxRate {
		return fmt.Errorf("rate %v: want a finite number of requests per second from %v to %v", r, minRate, float64(maxRate))
	}
	return nil
}

// checkShare refuses a failure rate that is not in (0, 1].
func checkShare(r float64) error {
	if !(r > 0 && r <= 1) { // false for NaN too
		return fmt.Errorf("%v: want a share in (0, 1] or a percentage", r)
	}
	return nil
}

// EnvError is the error New returns for a bad environment variable.
type EnvError struct {
	Var, Value string
	Err        error
}

func (e *EnvError) Error() string {
	return fmt.Sprintf("mesh: %s=%q: %v", e.Var, e.Value, e.Err)
}

func (e *EnvError) Unwrap() error { return e.Err }

// fromEnv fills c from the environment, read through lookupEnv
// (os.LookupEnv outside tests); ctx bounds reading the files it names.
func (c *config) fromEnv(ctx context.Context, lookupEnv func(string) (string, bool)) error {
	getenv := func(name string) string { v, _ := lookupEnv(name); return v }
	bad := func(name string, err error) error { return &EnvError{Var: name, Value: getenv(name), Err: err} }

	if path := getenv(EnvBootstrap); path != "" {
		b, err := fileutil.ReadFile(ctx, path, fileutil.MaxConfigFile)
		if err != nil {
			return bad(EnvBootstrap, fmt.Errorf("reading the bootstrap file: %w", err))
		}
		if err := checkBootstrap(b); err != nil {
			return bad(EnvBootstrap, err)
		}
		c.bootstrap, c.bootstrapSource = b, EnvBootstrap
	} else if js := getenv(EnvBootstrapConfig); js != "" {
		if err := checkBootstrap([]byte(js)); err != nil {
			return &EnvError{Var: EnvBootstrapConfig, Value: abbreviate(js), Err: err}
		}
		c.bootstrap, c.bootstrapSource = []byte(js), EnvBootstrapConfig
	}

	c.retry = defaultRetryPolicy()
	if err := retryFromEnv(getenv, &c.retry); err != nil {
		return err
	}
	if err := resilienceFromEnv(getenv, c); err != nil {
		return err
	}

	if v := getenv(EnvOutlierErrors); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return bad(EnvOutlierErrors, errors.New("want a count of consecutive errors, 0 to turn ejection off"))
		}
		c.outlier.ConsecutiveErrors = n
		if n == 0 {
			c.outlier.ConsecutiveErrors = -1 // the config's "off"
		}
	}

	c.serviceName = getenv(EnvServiceName)
	if c.serviceName == "" {
		c.serviceName = getenv(EnvOTelServiceName)
	}

	if v, set := lookupEnv(EnvEndpoints); set {
		eps, err := resolver.ParseEndpoints(v)
		if err != nil {
			return bad(EnvEndpoints, err)
		}
		c.endpoints = eps
	}
	if v, set := lookupEnv(EnvDNS); set {
		m, err := parseDNSServices(v)
		if err != nil {
			return bad(EnvDNS, err)
		}
		c.dnsServices = m
	}
	if v := getenv(EnvDNSRefresh); v != "" {
		d, err := parseDuration(v, minDNSRefresh, "30s")
		if err != nil {
			return bad(EnvDNSRefresh, fmt.Errorf("%w; each refresh looks every DNS name up again", err))
		}
		c.dnsRefresh = d
	}
	if v := getenv(EnvLBPolicy); v != "" {
		if err := checkLBPolicy(v); err != nil {
			return bad(EnvLBPolicy, err)
		}
		c.lbPolicy = v
	}
	if v := getenv(EnvMTLS); v != "" {
		m, err := security.ParseMTLSMode(v)
		if err != nil {
			return bad(EnvMTLS, err)
		}
		c.mtls = m
	}
	c.spiffeSocket = getenv(EnvSPIFFESocket)
	c.svidCertFile, c.svidKeyFile, c.bundleFile = getenv(EnvSVIDCertFile), getenv(EnvSVIDKeyFile), getenv(EnvBundleFile)
	c.authzPolicyFile = getenv(EnvAuthzPolicy)
	c.workload.Namespace = getenv(EnvNamespace)
	if c.workload.Namespace == "" {
		c.workload.Namespace = getenv(EnvPodNamespace)
	}
	if v := getenv(EnvWorkloadLabels); v != "" {
		labels, err := parseLabels(v)
		if err != nil {
			return bad(EnvWorkloadLabels, err)
		}
		c.workload.Labels = labels
	}
	if v := getenv(EnvAdminAddr); v != "" {
		if err := checkListenAddr(v); err != nil {
			return bad(EnvAdminAddr, err)
		}
		c.adminAddr = v
	}
	if v := getenv(EnvAdminHosts); v != "" {
		hosts, err := admin.ParseHosts(v)
		if err != nil {
			return bad(EnvAdminHosts, err)
		}
		c.adminHosts = hosts
	}
	if v := getenv(EnvAdminPprof); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return bad(EnvAdminPprof, errors.New("want true or false"))
		}
		c.adminPprof = on
	}
	if v := getenv(EnvXDSDelta); v != "" {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return bad(EnvXDSDelta, errors.New("want true or false"))
		}
		c.xdsDelta = on
	}
	switch v := strings.ToLower(getenv(EnvHTTPProtocol)); v {
	case "", "http1", "http/1.1":
	case "h2", "h2c", "http2":
		c.http2 = true
	default:
		return bad(EnvHTTPProtocol, errors.New("want http1 or h2 (h2c and http2 mean h2 too)"))
	}
	if err := lbFromEnv(getenv, c); err != nil {
		return err
	}
	if v := getenv(EnvShutdownTimeout); v != "" {
		d, err := parseDuration(v, minDuration, "10s")
		if err != nil {
			return bad(EnvShutdownTimeout, err)
		}
		c.shutdownTimeout = d
	}
	return nil
}

// parseDNSServices parses WEFT_DNS: "orders=orders.svc:8080;inv=_grpc._tcp.inv.svc".
func parseDNSServices(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("no services (want name=dns-name;...)")
	}
	pairs, err := keyValues(s, ";", "name=dns-name")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range pairs {
		name, target := p[0], p[1]
		if target == "" {
			return nil, fmt.Errorf("entry %q: want name=dns-name", name+"=")
		}
		if err := resolver.ValidateDNSName(target); err != nil {
			return nil, fmt.Errorf("service %q: %w", name, err)
		}
		out[name] = target
	}
	return out, nil
}

// keyValues splits entries "key=value" separated by sep, trimming spaces
// and skipping empty entries, for the variables that take such lists. An
// entry without '=' or without a key, or a key given twice, is an error
// naming it; want is the form expected, for that error. Values may be
// empty: callers that need one say so.
func keyValues(v, sep, want string) ([][2]string, error) {
	var out [][2]string
	seen := map[string]bool{}
	for entry := range strings.SplitSeq(v, sep) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		k, val, ok := strings.Cut(entry, "=")
		k, val = strings.TrimSpace(k), strings.TrimSpace(val)
		if !ok || k == "" {
			return nil, fmt.Errorf("entry %q: want %s", entry, want)
		}
		if seen[k] {
			return nil, fmt.Errorf("%q is given twice", k)
		}
		seen[k] = true
		out = append(out, [2]string{k, val})
	}
	return out, nil
}

func checkLBPolicy(name string) error {
	if balancer.Get(name) == nil {
		return fmt.Errorf("unknown balancer %q (registered: %s)", name, strings.Join(balancer.Names(), ", "))
	}
	return nil
}

func checkListenAddr(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	return nil
}

// checkBootstrap checks what New relies on in a bootstrap: a JSON object
// naming at least one xDS server with a URI.
func checkBootstrap(b []byte) error {
	var bs struct {
		XDSServers []struct {
			ServerURI string `json:"server_uri"`
		} `json:"xds_servers"`
	}
	if err := json.Unmarshal(b, &bs); err != nil {
		return fmt.Errorf("bootstrap is not valid JSON: %w", err)
	}
	if len(bs.XDSServers) == 0 {
		return errors.New("bootstrap has no xds_servers")
	}
	for i, s := range bs.XDSServers {
		if s.ServerURI == "" {
			return fmt.Errorf("bootstrap xds_servers[%d] has no server_uri", i)
		}
	}
	return nil
}

func abbreviate(s string) string {
	if len(s) > 64 {
		return s[:61] + "..."
	}
	return s
}

// parseLabels reads "app=orders,version=v2". Keys and values follow
// Kubernetes' label syntax loosely: a key is required, and neither holds
// '=' or ','.
func parseLabels(v string) (map[string]string, error) {
	pairs, err := keyValues(v, ",", "key=value")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range pairs {
		k, val := p[0], p[1]
		switch {
		case strings.ContainsAny(k, " \t"):
			return nil, fmt.Errorf("%q: bad label key", k)
		case strings.Contains(val, "="):
			return nil, fmt.Errorf("label %q: a value holds '='", k)
		}
		out[k] = val
	}
	return out, nil
}
