package orcaload_test

import (
	"math"
	"strings"
	"testing"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/internal/orcaload"
)

// TestParse holds the parser to Envoy's endpoint-load-metrics forms: "TEXT"
// with comma-separated name=value pairs (named_metrics.<key> for the
// named map), "JSON" with the OrcaLoadReport's protobuf JSON, and "BIN"
// with the base64 serialized message. Bad input is refused with the
// culprit named.
func TestParse(t *testing.T) {
	bin, _ := orcaload.FormatBin(&v3orcapb.OrcaLoadReport{CpuUtilization: 0.3, RpsFractional: 10, NamedMetrics: map[string]float64{"q": 2}})
	for _, tc := range []struct {
		name, in string
		want     *v3orcapb.OrcaLoadReport
		err      string
	}{
		{name: "text", in: "TEXT cpu_utilization=0.3,mem_utilization=0.5,named_metrics.foo=1",
			want: &v3orcapb.OrcaLoadReport{CpuUtilization: 0.3, MemUtilization: 0.5, NamedMetrics: map[string]float64{"foo": 1}}},
		{name: "text, all fields, spaces", in: " TEXT application_utilization=0.7, rps_fractional=120.5 ,eps=3,utilization.gpu=0.2,request_cost.db=4",
			want: &v3orcapb.OrcaLoadReport{ApplicationUtilization: 0.7, RpsFractional: 120.5, Eps: 3,
				Utilization: map[string]float64{"gpu": 0.2}, RequestCost: map[string]float64{"db": 4}}},
		{name: "text empty", in: "TEXT", want: &v3orcapb.OrcaLoadReport{}},
		{name: "json", in: `JSON {"cpuUtilization":0.3,"rpsFractional":10,"namedMetrics":{"foo":1}}`,
			want: &v3orcapb.OrcaLoadReport{CpuUtilization: 0.3, RpsFractional: 10, NamedMetrics: map[string]float64{"foo": 1}}},
		{name: "bin", in: bin, want: &v3orcapb.OrcaLoadReport{CpuUtilization: 0.3, RpsFractional: 10, NamedMetrics: map[string]float64{"q": 2}}},
		{name: "unknown format", in: "YAML cpu_utilization: 1", err: `"YAML"`},
		{name: "unknown metric", in: "TEXT cpu=0.3", err: `"cpu"`},
		{name: "not a pair", in: "TEXT cpu_utilization", err: "name=value"},
		{name: "twice", in: "TEXT eps=1,eps=2", err: "twice"},
		{name: "not a number", in: "TEXT eps=lots", err: "eps"},
		{name: "negative", in: "TEXT cpu_utilization=-0.1", err: "cpu_utilization"},
		{name: "NaN", in: "TEXT rps_fractional=NaN", err: "rps_fractional"},
		{name: "memory above 1", in: "TEXT mem_utilization=1.5", err: "mem_utilization"},
		{name: "bad json", in: "JSON {", err: "JSON"},
		{name: "bad base64", in: "BIN !!!", err: "BIN"},
		{name: "too long", in: "TEXT " + strings.Repeat("x", 9000), err: "exceeds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := orcaload.Parse(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %s", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestFormatTextRoundTrip: what the server writes, the client reads back.
func TestFormatTextRoundTrip(t *testing.T) {
	in := &v3orcapb.OrcaLoadReport{CpuUtilization: 0.25, MemUtilization: 0.5, ApplicationUtilization: 0.125, RpsFractional: 1e3, Eps: 1.5,
		Utilization: map[string]float64{"a": 0.5}, RequestCost: map[string]float64{"b": 2}, NamedMetrics: map[string]float64{"c": -3, "d": 4}}
	s := orcaload.FormatText(in)
	if want := "TEXT cpu_utilization=0.25,mem_utilization=0.5,application_utilization=0.125,rps_fractional=1000,eps=1.5,named_metrics.c=-3,named_metrics.d=4,utilization.a=0.5,request_cost.b=2"; s != want {
		t.Errorf("FormatText = %q, want %q", s, want)
	}
	out, err := orcaload.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, out) {
		t.Errorf("round trip: got %v, want %v", out, in)
	}
}

// FuzzParse: no input panics or hangs the parser, and a report it accepts
// comes back with the same figures through FormatText. Seeds are in
// testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add("TEXT cpu_utilization=0.3,mem_utilization=0.5,named_metrics.foo=1")
	f.Add(`JSON {"cpuUtilization":0.3}`)
	f.Fuzz(func(t *testing.T, in string) {
		r, err := orcaload.Parse(in)
		if err != nil {
			return
		}
		back, err := orcaload.Parse(orcaload.FormatText(r))
		if err != nil {
			t.Fatalf("Parse(%q) accepted, but its TEXT %q does not parse: %v", in, orcaload.FormatText(r), err)
		}
		for _, f := range []struct {
			name string
			a, b float64
		}{
			{"cpu_utilization", r.GetCpuUtilization(), back.GetCpuUtilization()},
			{"mem_utilization", r.GetMemUtilization(), back.GetMemUtilization()},
			{"application_utilization", r.GetApplicationUtilization(), back.GetApplicationUtilization()},
			{"rps_fractional", r.GetRpsFractional(), back.GetRpsFractional()},
			{"eps", r.GetEps(), back.GetEps()},
		} {
			if f.a != f.b && !(math.IsNaN(f.a) && math.IsNaN(f.b)) {
				t.Errorf("%s: %v, after TEXT round trip %v", f.name, f.a, f.b)
			}
		}
	})
}
