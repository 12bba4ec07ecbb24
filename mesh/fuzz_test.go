package mesh

import (
	"context"
	"errors"
	"testing"
)

// fuzzedEnv are the variables FuzzEnv sets: every one New parses, except
// GRPC_XDS_BOOTSTRAP, whose value is a path New reads.
var fuzzedEnv = []string{
	EnvBootstrapConfig, EnvServiceName, EnvOTelServiceName, EnvEndpoints, EnvDNS, EnvDNSRefresh,
	EnvLBPolicy, EnvMTLS, EnvAuthzPolicy, EnvAdminAddr, EnvAdminPprof, EnvHTTPProtocol,
	EnvShutdownTimeout, EnvRetryOn, EnvRetries, EnvPerTryTimeout, EnvTimeout, EnvOutlierErrors, EnvXDSDelta,
}

// FuzzEnv feeds a fuzzed value to one of the WEFT_* (and bootstrap)
// variables, and optionally a second value to another, through the same
// parser New uses. It must not panic, must be deterministic, and a
// rejected value must be an *EnvError naming one of the variables set.
// Seeds: testdata/fuzz/FuzzEnv.
func FuzzEnv(f *testing.F) {
	f.Fuzz(func(t *testing.T, which uint8, value string, other uint8, otherValue string) {
		a := fuzzedEnv[int(which)%len(fuzzedEnv)]
		b := fuzzedEnv[int(other)%len(fuzzedEnv)]
		env := map[string]string{a: value}
		if b != a {
			env[b] = otherValue
		}
		lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }

		var c1, c2 config
		err1, err2 := c1.fromEnv(context.Background(), lookup), c2.fromEnv(context.Background(), lookup)
		if (err1 == nil) != (err2 == nil) || (err1 != nil && err1.Error() != err2.Error()) {
			t.Fatalf("fromEnv is not deterministic: %v, then %v", err1, err2)
		}
		if err1 != nil {
			var ee *EnvError
			if !errors.As(err1, &ee) {
				t.Fatalf("error %v (%T) is not an *EnvError", err1, err1)
			}
			if _, set := env[ee.Var]; !set {
				t.Fatalf("error names %s, which is not set (set: %v)", ee.Var, env)
			}
			return
		}
		// What parsed must be usable: endpoint and DNS entries name a
		// service, and the policy is registered.
		for name, eps := range c1.endpoints {
			if name == "" || len(eps) == 0 {
				t.Errorf("%s=%q parsed to service %q with %d endpoints", EnvEndpoints, env[EnvEndpoints], name, len(eps))
			}
		}
		for name, target := range c1.dnsServices {
			if name == "" || target == "" {
				t.Errorf("%s=%q parsed to %q -> %q", EnvDNS, env[EnvDNS], name, target)
			}
		}
		if c1.lbPolicy != "" {
			if err := checkLBPolicy(c1.lbPolicy); err != nil {
				t.Errorf("%s accepted %q: %v", EnvLBPolicy, c1.lbPolicy, err)
			}
		}
	})
}
