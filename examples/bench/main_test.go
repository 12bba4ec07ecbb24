package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tables splits Markdown output into its tables: runs of lines starting
// with "|".
func tables(out string) [][]string {
	var ts [][]string
	var cur []string
	for line := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(line, "|") {
			cur = append(cur, line)
			continue
		}
		if cur != nil {
			ts = append(ts, cur)
			cur = nil
		}
	}
	if cur != nil {
		ts = append(ts, cur)
	}
	return ts
}

// TestShortRun runs the whole harness in its shortest mode and checks that
// it works: every comparison has every row, every request was answered
// (callers check status and size), the open loop sent what it scheduled,
// the xDS runs saw every endpoint and the change, and each table is well
// formed. No timing is checked; on a shared machine it proves nothing.
func TestShortRun(t *testing.T) {
	var out bytes.Buffer
	rep, err := run(context.Background(), []string{"-short"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	o, _ := parseFlags([]string{"-short"}, &bytes.Buffer{})

	if want := len(protocols) * len(sizes) * len(concurrencies); len(rep.http) != want {
		t.Errorf("%d HTTP rows, want %d", len(rep.http), want)
	}
	for _, r := range rep.http {
		if r.plain.ops == 0 || r.weft.ops == 0 || r.plain.busy <= 0 || r.weft.busy <= 0 {
			t.Errorf("HTTP %s %d B ×%d: plain %+v, Weft %+v; want requests on both sides", r.protocol, r.size, r.conc, r.plain, r.weft)
		}
	}
	if want := len(sizes) * len(concurrencies); len(rep.grpc) != want {
		t.Errorf("%d gRPC rows, want %d", len(rep.grpc), want)
	}
	for _, r := range rep.grpc {
		for i, c := range r.r {
			if c.ops == 0 {
				t.Errorf("gRPC %d B ×%d: client %d sent nothing", r.size, r.conc, i)
			}
		}
	}
	if len(rep.full) != len(concurrencies) {
		t.Errorf("%d full-stack rows, want %d", len(rep.full), len(concurrencies))
	}
	for _, r := range rep.full {
		for i, c := range r.r {
			if c.ops == 0 {
				t.Errorf("full stack ×%d: variant %d sent nothing", r.conc, i)
			}
		}
	}
	if want := len(o.rates) * 4; len(rep.open) != want {
		t.Errorf("%d open-loop rows, want %d", len(rep.open), want)
	}
	for _, r := range rep.open {
		// Two halves of rate × rate-duration/2 requests each.
		want := 2 * int(r.rate*(o.rateTime/2).Seconds())
		for _, side := range []openResult{r.plain, r.weft} {
			if side.requests != want || side.errors != 0 || len(side.run.Latencies) != want {
				t.Errorf("open loop %s at %g/s: %d requests (%d timed), %d errors; want %d, 0", r.traffic, r.rate,
					side.requests, len(side.run.Latencies), side.errors, want)
				continue
			}
			if q := side.run.Quantile; !(q(0.5) <= q(0.9) && q(0.9) <= q(0.99) && q(0.99) <= q(0.999)) {
				t.Errorf("open loop %s at %g/s: quantiles out of order", r.traffic, r.rate)
			}
			if side.cpu <= 0 {
				t.Errorf("open loop %s at %g/s: no CPU time measured", r.traffic, r.rate)
			}
		}
	}
	switch {
	case rep.sidecar == nil:
		t.Error("no sidecar report")
	case rep.sidecar.skipped:
		// A machine without HAProxy: -short never installs it.
		t.Logf("sidecar rows skipped: %s", rep.sidecar.proxy)
	case len(rep.sidecar.rows) != 4:
		t.Errorf("%d sidecar rows, want 4", len(rep.sidecar.rows))
	default:
		for _, r := range rep.sidecar.rows {
			if r.closed.ops == 0 || r.open.requests == 0 || r.open.errors != 0 || r.open.cpu <= 0 {
				t.Errorf("sidecar %s: closed %+v, open %d requests, %d errors, CPU %v; want requests, no errors, CPU measured",
					r.name, r.closed, r.open.requests, r.open.errors, r.open.cpu)
			}
		}
	}
	if len(rep.memory) != 6 || rep.memory[0].mem.rss == 0 && rep.memory[1].mem.rss == 0 {
		t.Errorf("memory rows %+v, want 6 with RSS read", rep.memory)
	} else if rep.memory[3].mem.heap <= 0 || rep.memory[4].mem.heap <= 0 {
		t.Errorf("memory per connection %+v, %+v; want each connection to weigh something", rep.memory[3], rep.memory[4])
	}
	if want := len(o.endpoints) + 1; len(rep.xds) != want {
		t.Errorf("%d xDS rows, want %d", len(rep.xds), want)
	}
	for _, r := range rep.xds {
		if r.sync <= 0 || r.change <= 0 {
			t.Errorf("xDS %s: sync %v, change %v; want both measured", r.name, r.sync, r.change)
		}
	}

	text := out.String()
	if !strings.HasPrefix(text, "Hardware: ") || !strings.Contains(strings.SplitN(text, "\n", 2)[0], "vCPUs") {
		t.Errorf("no hardware line first:\n%s", text)
	}
	ts := tables(text)
	wantRows := []int{len(rep.http), len(rep.grpc), len(rep.full), 3 * len(rep.open)}
	if rep.sidecar != nil && !rep.sidecar.skipped {
		wantRows = append(wantRows, len(rep.sidecar.rows))
	}
	wantRows = append(wantRows, len(rep.memory), len(rep.xds))
	if len(ts) != len(wantRows) {
		t.Fatalf("%d tables, want %d:\n%s", len(ts), len(wantRows), text)
	}
	for i, tab := range ts {
		cells := strings.Count(tab[0], "|")
		if len(tab) < 2 || !strings.HasPrefix(tab[1], "| ---") && !strings.HasPrefix(tab[1], "| ---:") {
			t.Errorf("table %d has no separator line:\n%s", i, strings.Join(tab, "\n"))
		}
		for _, line := range tab {
			if strings.Count(line, "|") != cells {
				t.Errorf("table %d: %q has %d cells, header %d", i, line, strings.Count(line, "|")-1, cells-1)
			}
			if strings.Contains(line, "NaN") || strings.Contains(line, "Inf") {
				t.Errorf("table %d: %q", i, line)
			}
		}
		if got := len(tab) - 2; got != wantRows[i] {
			t.Errorf("table %d: %d rows, want %d:\n%s", i, got, wantRows[i], strings.Join(tab, "\n"))
		}
	}
}

func TestOnlyOneSection(t *testing.T) {
	var out bytes.Buffer
	rep, err := run(context.Background(), []string{"-short", "-only", "xds", "-endpoints", "1,10", "-clusters", "3"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.xds) != 3 || rep.http != nil || rep.open != nil {
		t.Errorf("-only xds ran %d xDS rows, %d HTTP rows, %d open-loop rows; want 3, 0, 0", len(rep.xds), len(rep.http), len(rep.open))
	}
	if n := len(tables(out.String())); n != 1 {
		t.Errorf("%d tables, want 1:\n%s", n, out.String())
	}
}

func TestXDSDelta(t *testing.T) {
	var out bytes.Buffer
	rep, err := run(context.Background(), []string{"-short", "-only", "xds", "-endpoints", "1", "-clusters", "3", "-xds-delta"}, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.xds) != 2 || !strings.HasSuffix(rep.xds[1].name, ", delta") {
		t.Errorf("-xds-delta: got rows %+v, want 2 named as delta", rep.xds)
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-rates", "0"}, {"-rates", "x"}, {"-endpoints", "0"}, {"-clusters", "-1"},
		{"-only", "nope"}, {"-only", ""}, {"-duration", "0s"}, {"-rates", "1", "-rate-duration", "1s"}, {"extra"},
	} {
		var out bytes.Buffer
		if _, err := run(context.Background(), args, &out); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
