package mesh_test

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/resilience"
)

// TestUnknownWeftVariableWarns: a misspelt WEFT_* variable is not ignored
// in silence; New warns once, naming the variable meant.
func TestUnknownWeftVariableWarns(t *testing.T) {
	t.Setenv("WEFT_ENDPONTS", "orders=127.0.0.1:1")
	t.Setenv("WEFT_RATELIMIT", "100")
	t.Setenv("WEFT_ZZZZZZZZZZZZZZ", "1")
	t.Setenv("WEFT_LB_POLICY", "round_robin") // known: no warning
	var logs syncBuffer
	m, err := mesh.New(context.Background(), mesh.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	m.Close()
	out := logs.String()
	for _, tc := range []struct{ name, want string }{
		{"WEFT_ENDPONTS", "did you mean WEFT_ENDPOINTS?"},
		{"WEFT_RATELIMIT", "did you mean WEFT_RATE_LIMIT?"},
		{"WEFT_ZZZZZZZZZZZZZZ", "is not a variable Weft reads"},
	} {
		var lines []string
		for line := range strings.Lines(out) {
			if strings.Contains(line, tc.name+" ") {
				lines = append(lines, line)
			}
		}
		if len(lines) != 1 || !strings.Contains(lines[0], "level=WARN") || !strings.Contains(lines[0], tc.want) {
			t.Errorf("log lines about %s: %q; want one WARN line containing %q", tc.name, lines, tc.want)
		}
	}
	if strings.Contains(out, "WEFT_LB_POLICY ") || strings.Contains(out, "WEFT_ZZZZZZZZZZZZZZ (did you mean") {
		t.Errorf("log warns about a known variable or suggests a far one:\n%s", out)
	}
}

// TestNumericVariablesRefuseNonsense: every numeric WEFT_* variable
// refuses non-finite values, overflowing values, negatives, zero where it
// means nothing and durations below a floor, naming the variable.
func TestNumericVariablesRefuseNonsense(t *testing.T) {
	nonNumbers := []string{"NaN", "Inf", "+Inf", "-Inf", "1e308", "-1"}
	durations := append(nonNumbers, "0", "0s", "-1s", "1ns", "999us")
	type tc struct {
		variable string
		values   []string
		extra    map[string]string // other variables the one tested needs
		valid    []string
	}
	cases := []tc{
		{"WEFT_DNS_REFRESH", append(durations, "999ms", "1us"), nil, []string{"1s", "30s"}},
		{"WEFT_SHUTDOWN_TIMEOUT", durations, nil, []string{"1ms", "10s"}},
		{"WEFT_PER_TRY_TIMEOUT", durations, nil, []string{"1ms"}},
		{"WEFT_TIMEOUT", durations, nil, []string{"2s"}},
		{"WEFT_HEDGE_DELAY", durations, nil, []string{"p95", "1ms"}},
		{"WEFT_SLOW_START_WINDOW", durations, nil, []string{"60s"}},
		{"WEFT_SESSION_COOKIE_TTL", append(nonNumbers, "1ns", "500ms"), map[string]string{"WEFT_SESSION_COOKIE": "s"}, []string{"0", "1s", "1h"}},
		{"WEFT_RATE_LIMIT", append(nonNumbers, "0", "1e-300", "1e-4", "2e9", "100,burst=NaN", "100,burst=1e308", "100,burst=0",
			"100,burst=-1", "100,burst=99999999999", "NaN,burst=10"), nil, []string{"100", "0.5", "100,burst=200", "1e-3"}},
		{"WEFT_BREAKER", []string{"rate=NaN", "rate=NaN%", "rate=Inf", "rate=+Inf", "rate=-Inf", "rate=1e308", "rate=-0.5", "rate=0",
			"rate=1.5", "rate=0x1p-2000", "window=1ns", "open=1ns", "window=Inf", "open=1e308", "consecutive=NaN",
			"consecutive=-1", "min=1e308", "min=0", "halfopen=-1", "halfopen=Inf"}, nil,
			[]string{"rate=50%", "rate=0.5,window=10s,min=20", "consecutive=0", "open=1ms"}},
		{"WEFT_RETRIES", nonNumbers, nil, []string{"0", "4"}},
		{"WEFT_HEDGE_MAX", append(nonNumbers, "0", "1"), map[string]string{"WEFT_HEDGE_DELAY": "p95"}, []string{"2"}},
		{"WEFT_OUTLIER_CONSECUTIVE_ERRORS", nonNumbers, nil, []string{"0", "5"}},
	}
	for _, c := range cases {
		for _, v := range c.values {
			t.Run(c.variable+"="+v, func(t *testing.T) {
				for k, ev := range c.extra {
					t.Setenv(k, ev)
				}
				t.Setenv(c.variable, v)
				m, err := mesh.New(context.Background())
				if err == nil {
					m.Close()
					t.Fatalf("%s=%q: New succeeded, want an error", c.variable, v)
				}
				var envErr *mesh.EnvError
				if !errors.As(err, &envErr) || envErr.Var != c.variable {
					t.Errorf("%s=%q: error %v is not an *EnvError naming the variable", c.variable, v, err)
				}
			})
		}
		for _, v := range c.valid {
			t.Run(c.variable+"="+v+" is accepted", func(t *testing.T) {
				for k, ev := range c.extra {
					t.Setenv(k, ev)
				}
				t.Setenv(c.variable, v)
				m, err := mesh.New(context.Background())
				if err != nil {
					t.Fatalf("%s=%q: New: %v, want it accepted", c.variable, v, err)
				}
				m.Close()
			})
		}
	}
}

// TestNumericOptionsRefuseNonsense: the options matching the numeric
// variables refuse the same values.
func TestNumericOptionsRefuseNonsense(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		name string
		opt  mesh.Option
		want string
	}{
		{"rate NaN", mesh.WithRateLimit(nan, 0), "WithRateLimit"},
		{"rate Inf", mesh.WithRateLimit(inf, 0), "WithRateLimit"},
		{"rate -Inf", mesh.WithRateLimit(-inf, 0), "WithRateLimit"},
		{"rate 1e308", mesh.WithRateLimit(1e308, 0), "WithRateLimit"},
		{"rate 0", mesh.WithRateLimit(0, 0), "WithRateLimit"},
		{"rate tiny", mesh.WithRateLimit(1e-300, 0), "WithRateLimit"},
		{"burst negative", mesh.WithRateLimit(100, -1), "WithRateLimit"},
		{"breaker rate NaN", mesh.WithBreaker(resilience.BreakerSettings{FailureRate: nan}), "FailureRate"},
		{"breaker rate Inf", mesh.WithBreaker(resilience.BreakerSettings{FailureRate: inf}), "FailureRate"},
		{"breaker rate 1e308", mesh.WithBreaker(resilience.BreakerSettings{FailureRate: 1e308}), "FailureRate"},
		{"breaker rate negative", mesh.WithBreaker(resilience.BreakerSettings{FailureRate: -0.5}), "FailureRate"},
		{"breaker window 1ns", mesh.WithBreaker(resilience.BreakerSettings{Window: 1}), "Window"},
		{"breaker open negative", mesh.WithBreaker(resilience.BreakerSettings{OpenTimeout: -time.Second}), "OpenTimeout"},
		{"hedge delay 1ns", mesh.WithHedging(resilience.HedgePolicy{Delay: 1, MaxAttempts: 2}), "WithHedging"},
		{"shutdown 1ns", mesh.WithShutdownTimeout(1), "WithShutdownTimeout"},
		{"xDS idle 1ns", mesh.WithXDSIdleTimeout(1), "WithXDSIdleTimeout"},
		{"cookie ttl 1ns", mesh.WithSessionAffinity("s", 1), "WithSessionAffinity"},
		{"slow start 1ns", mesh.WithSlowStart(balancer.SlowStartConfig{Window: 1}), "WithSlowStart"},
		{"per-try timeout 1ns", mesh.WithRetryPolicy(resilience.RetryPolicy{PerTryTimeout: 1}), "PerTryTimeout"},
		{"timeout 1ns", mesh.WithRetryPolicy(resilience.RetryPolicy{Timeout: 1}), "Timeout"},
		{"outlier interval 1ns", mesh.WithOutlierDetection(balancer.OutlierConfig{Interval: 1}), "Interval"},
		{"outlier ejection 1us", mesh.WithOutlierDetection(balancer.OutlierConfig{BaseEjectionTime: time.Microsecond}), "BaseEjectionTime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := mesh.New(context.Background(), tc.opt)
			if err == nil {
				m.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "mesh: ") {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}
}
