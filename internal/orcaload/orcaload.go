// Package orcaload reads and writes ORCA backend-metric reports (the
// xds.data.orca.v3.OrcaLoadReport message) in the forms they travel in
// over HTTP: Envoy's endpoint-load-metrics response header.
//
// Envoy's header takes three forms, told apart by a prefix:
//
//	endpoint-load-metrics: TEXT cpu_utilization=0.3,mem_utilization=0.5,named_metrics.foo=1
//	endpoint-load-metrics: JSON {"cpuUtilization":0.3,"namedMetrics":{"foo":1}}
//	endpoint-load-metrics: BIN <base64 of the serialized OrcaLoadReport>
//
// and the header endpoint-load-metrics-bin carries the base64 form alone,
// as gRPC's binary trailer does.
package orcaload

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	v3orcapb "github.com/cncf/xds/go/xds/data/orca/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Header is the HTTP response header Envoy reads ORCA reports from.
const Header = "Endpoint-Load-Metrics"

// BinHeader is the header carrying the base64 serialized report alone.
const BinHeader = "Endpoint-Load-Metrics-Bin"

// maxHeader bounds the header value a parser accepts: a report is a few
// dozen bytes, and a backend that sends megabytes is not to be trusted
// with the parser's time.
const maxHeader = 8 << 10

// Parse reads the value of an endpoint-load-metrics header.
func Parse(v string) (*v3orcapb.OrcaLoadReport, error) {
	if len(v) > maxHeader {
		return nil, fmt.Errorf("orca: header of %d bytes exceeds %d", len(v), maxHeader)
	}
	v = strings.TrimSpace(v)
	format, body, _ := strings.Cut(v, " ")
	body = strings.TrimSpace(body)
	var (
		r   *v3orcapb.OrcaLoadReport
		err error
	)
	switch format {
	case "TEXT":
		r, err = parseText(body)
	case "JSON":
		r = new(v3orcapb.OrcaLoadReport)
		if err = protojson.Unmarshal([]byte(body), r); err != nil {
			err = fmt.Errorf("JSON: %w", err)
		}
	case "BIN":
		r, err = ParseBin(body)
	default:
		return nil, fmt.Errorf("orca: header format %q is not TEXT, JSON or BIN", format)
	}
	if err != nil {
		return nil, fmt.Errorf("orca: %w", err)
	}
	if err := validate(r); err != nil {
		return nil, fmt.Errorf("orca: %w", err)
	}
	return r, nil
}

// ParseBin reads the base64 serialized report of a BIN header or an
// endpoint-load-metrics-bin header (standard or URL alphabet, padded or
// not, as gRPC's binary metadata may arrive).
func ParseBin(v string) (*v3orcapb.OrcaLoadReport, error) {
	v = strings.TrimRight(strings.TrimSpace(v), "=")
	raw, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		if raw, err = base64.RawURLEncoding.DecodeString(v); err != nil {
			return nil, fmt.Errorf("BIN: %w", err)
		}
	}
	r := new(v3orcapb.OrcaLoadReport)
	if err := proto.Unmarshal(raw, r); err != nil {
		return nil, fmt.Errorf("BIN: %w", err)
	}
	return r, nil
}

// parseText reads Envoy's TEXT form: comma-separated name=value pairs,
// names being the report's fields (cpu_utilization, mem_utilization,
// application_utilization, rps_fractional, eps) and, for its maps,
// named_metrics.<key>, utilization.<key> and request_cost.<key>.
func parseText(s string) (*v3orcapb.OrcaLoadReport, error) {
	r := new(v3orcapb.OrcaLoadReport)
	if s == "" {
		return r, nil
	}
	seen := map[string]bool{}
	for pair := range strings.SplitSeq(s, ",") {
		name, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("TEXT: %q is not name=value", pair)
		}
		if seen[name] {
			return nil, fmt.Errorf("TEXT: %q appears twice", name)
		}
		seen[name] = true
		f, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("TEXT: %s: %w", name, err)
		}
		switch name {
		case "cpu_utilization":
			r.CpuUtilization = f
		case "mem_utilization":
			r.MemUtilization = f
		case "application_utilization":
			r.ApplicationUtilization = f
		case "rps_fractional":
			r.RpsFractional = f
		case "eps":
			r.Eps = f
		default:
			prefix, key, ok := strings.Cut(name, ".")
			if !ok || key == "" {
				return nil, fmt.Errorf("TEXT: unknown metric %q", name)
			}
			var m *map[string]float64
			switch prefix {
			case "named_metrics":
				m = &r.NamedMetrics
			case "utilization":
				m = &r.Utilization
			case "request_cost":
				m = &r.RequestCost
			default:
				return nil, fmt.Errorf("TEXT: unknown metric %q", name)
			}
			if *m == nil {
				*m = map[string]float64{}
			}
			(*m)[key] = f
		}
	}
	return r, nil
}

// validate applies the ranges the ORCA proto documents: utilizations and
// rates are finite and not negative; memory utilization is a fraction.
func validate(r *v3orcapb.OrcaLoadReport) error {
	check := func(name string, v float64) error {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return fmt.Errorf("%s %v is not a finite non-negative number", name, v)
		}
		return nil
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"cpu_utilization", r.CpuUtilization},
		{"mem_utilization", r.MemUtilization},
		{"application_utilization", r.ApplicationUtilization},
		{"rps_fractional", r.RpsFractional},
		{"eps", r.Eps},
	} {
		if err := check(f.name, f.v); err != nil {
			return err
		}
	}
	if r.MemUtilization > 1 {
		return errors.New("mem_utilization above 1")
	}
	for k, v := range r.Utilization {
		if err := check("utilization."+k, v); err != nil {
			return err
		}
	}
	for k, v := range r.NamedMetrics {
		if math.IsNaN(v) {
			return fmt.Errorf("named_metrics.%s is NaN", k)
		}
	}
	return nil
}

// FormatText writes r in Envoy's TEXT form, prefix included, leaving out
// zero fields. Map keys come out sorted, so the header is deterministic.
func FormatText(r *v3orcapb.OrcaLoadReport) string {
	var b strings.Builder
	b.WriteString("TEXT ")
	first := true
	add := func(name string, v float64) {
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"cpu_utilization", r.GetCpuUtilization()},
		{"mem_utilization", r.GetMemUtilization()},
		{"application_utilization", r.GetApplicationUtilization()},
		{"rps_fractional", r.GetRpsFractional()},
		{"eps", r.GetEps()},
	} {
		if f.v != 0 {
			add(f.name, f.v)
		}
	}
	for _, m := range []struct {
		prefix string
		m      map[string]float64
	}{
		{"named_metrics.", r.GetNamedMetrics()},
		{"utilization.", r.GetUtilization()},
		{"request_cost.", r.GetRequestCost()},
	} {
		keys := make([]string, 0, len(m.m))
		for k := range m.m {
			// A key with a separator cannot be written in TEXT; BIN
			// carries any key.
			if !strings.ContainsAny(k, ",= ") {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			add(m.prefix+k, m.m[k])
		}
	}
	return b.String()
}

// FormatBin writes r in the BIN form, prefix included.
func FormatBin(r *v3orcapb.OrcaLoadReport) (string, error) {
	raw, err := proto.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("orca: %w", err)
	}
	return "BIN " + base64.StdEncoding.EncodeToString(raw), nil
}
