package main

import (
	"fmt"
	"io"
	"time"
)

func us(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Microsecond)) }

func ratio(a, b time.Duration) string { return fmt.Sprintf("%.3f", float64(a)/float64(max(b, 1))) }

func size(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// heapSize is b in KiB below a MiB (a connection's share), else in MiB.
func heapSize(b int64) string {
	if b > -1<<20 && b < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return mib(b)
}

func mib(b int64) string { return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20)) }

func kib(b float64) string {
	if b < 1024 {
		return fmt.Sprintf("%.0f B", b)
	}
	return fmt.Sprintf("%.1f KiB", b/1024)
}

func printHTTP(out io.Writer, o options, rep *report) {
	fmt.Fprintf(out, "### HTTP: net/http vs Weft (closed loop, interleaved, %v per side per row)\n\n", o.perVariant)
	fmt.Fprintln(out, "Mean latency of a GET from each of N callers sending back to back; CPU time (getrusage) and allocations are the whole process's, client and server, per request.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| protocol | response | callers | net/http µs | Weft µs | Weft / net/http | net/http CPU µs | Weft CPU µs | net/http allocs | Weft allocs |")
	fmt.Fprintln(out, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rep.http {
		fmt.Fprintf(out, "| %s | %s | %d | %s | %s | %s | %s | %s | %.0f | %.0f |\n", r.protocol, size(r.size), r.conc,
			us(r.plain.mean()), us(r.weft.mean()), ratio(r.weft.mean(), r.plain.mean()),
			us(r.plain.cpuPerOp()), us(r.weft.cpuPerOp()), r.plain.allocsPerOp(), r.weft.allocsPerOp())
	}
	fmt.Fprintln(out, "\nHTTP/2 TLS: net/http with server-authenticated TLS (ECDSA P-256); Weft with SPIFFE mTLS (ECDSA P-256 SVIDs), nothing else added.")
	fmt.Fprintln(out)
}

func printGRPC(out io.Writer, o options, rep *report) {
	fmt.Fprintf(out, "### gRPC: grpc-go vs grpc-go xds:/// vs Weft (closed loop, interleaved, %v per client per row)\n\n", o.perVariant)
	fmt.Fprintln(out, "Mean latency of a unary call (request and response of the size shown). grpc-go and grpc-go xds call a plain grpc-go server; Weft's clients call a NewGRPCServer server.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| payload | callers | grpc-go µs | grpc-go xds µs | Weft µs | Weft xds:/// µs | Weft / grpc-go | Weft / grpc-go xds | CPU µs grpc-go xds | CPU µs Weft | Weft / grpc-go xds, CPU | allocs grpc-go xds | allocs Weft |")
	fmt.Fprintln(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rep.grpc {
		fmt.Fprintf(out, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f |\n", size(r.size), r.conc,
			us(r.r[0].mean()), us(r.r[1].mean()), us(r.r[2].mean()), us(r.r[3].mean()),
			ratio(r.r[2].mean(), r.r[0].mean()), ratio(r.r[2].mean(), r.r[1].mean()),
			us(r.r[1].cpuPerOp()), us(r.r[2].cpuPerOp()), ratio(r.r[2].cpuPerOp(), r.r[1].cpuPerOp()),
			r.r[1].allocsPerOp(), r.r[2].allocsPerOp())
	}
	fmt.Fprintln(out)
}

func printFull(out io.Writer, o options, rep *report) {
	fmt.Fprintf(out, "### Full stack vs plain TLS (closed loop, interleaved, %v per side per row)\n\n", o.perVariant)
	fmt.Fprintln(out, "Full stack: SPIFFE mTLS, tracing sampled at 1% (batched to an exporter that drops spans), retries (2) and circuit-breaker thresholds armed, an authorization policy evaluated on every request. HTTP/2 over TLS, 1 KiB responses.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| callers | net/http TLS µs | Weft mTLS µs | Weft full stack µs | full stack / TLS | CPU µs TLS | CPU µs mTLS | CPU µs full stack | added CPU µs, full stack | allocs TLS | allocs full stack |")
	fmt.Fprintln(out, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rep.full {
		fmt.Fprintf(out, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f |\n", r.conc,
			us(r.r[0].mean()), us(r.r[1].mean()), us(r.r[2].mean()), ratio(r.r[2].mean(), r.r[0].mean()),
			us(r.r[0].cpuPerOp()), us(r.r[1].cpuPerOp()), us(r.r[2].cpuPerOp()), us(r.r[2].cpuPerOp()-r.r[0].cpuPerOp()),
			r.r[0].allocsPerOp(), r.r[2].allocsPerOp())
	}
	fmt.Fprintf(out, "\nSpans exported: %d.\n\n", rep.spans)
}

func printOpen(out io.Writer, o options, rep *report) {
	fmt.Fprintf(out, "### Open loop, constant rate (%v per side per rate, in the order plain, Weft, Weft, plain)\n\n", o.rateTime)
	fmt.Fprintln(out, "Latency from each request's release by a pacer that never waits for answers (no coordinated omission), 1 KiB responses. CPU is the process's user+system time (getrusage) per request, client and server together; vCPU per 1,000 requests per second is the same figure in Istio's unit.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| rate /s | traffic | side | requests | errors | p50 µs | p90 µs | p99 µs | p99.9 µs | CPU µs/request | vCPU per 1,000 rps |")
	fmt.Fprintln(out, "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	qs := []float64{0.50, 0.90, 0.99, 0.999}
	var lag time.Duration
	for _, r := range rep.open {
		lag = max(lag, r.plain.lag, r.weft.lag)
		for i, side := range []struct {
			name string
			res  openResult
		}{{r.sides[0], r.plain}, {r.sides[1], r.weft}} {
			fmt.Fprintf(out, "| %.0f | %s | %s | %d | %d |", r.rate, r.traffic, side.name, side.res.requests, side.res.errors)
			for _, q := range qs {
				fmt.Fprintf(out, " %s |", us(side.res.run.Quantile(q)))
			}
			cpu := side.res.cpuPerRequest()
			fmt.Fprintf(out, " %s | %.3f |\n", us(cpu), vcpu(cpu))
			if i == 1 {
				fmt.Fprintf(out, "| %.0f | %s | **added** | | |", r.rate, r.traffic)
				for _, q := range qs {
					fmt.Fprintf(out, " **%s** |", us(r.weft.run.Quantile(q)-r.plain.run.Quantile(q)))
				}
				added := r.weft.cpuPerRequest() - r.plain.cpuPerRequest()
				fmt.Fprintf(out, " **%s** | **%.3f** |\n", us(added), vcpu(added))
			}
		}
	}
	// Go's timers wake up to a millisecond late on Linux, so requests are
	// timed from their release; this says how far the pacer strayed from
	// the schedule, its own lateness, which no latency above includes.
	fmt.Fprintf(out, "\nThe pacer released requests within %s µs of their scheduled time (p99, worst run).\n\n", us(lag))
}

// vcpu converts CPU time per request into vCPUs per 1,000 requests per
// second: 1,000 requests a second, each costing d, keep 1000·d of CPU busy
// every second.
func vcpu(d time.Duration) float64 { return 1000 * d.Seconds() }

func printMemory(out io.Writer, o options, rep *report) {
	fmt.Fprintf(out, "### Memory of a client and server (each warmed by %d requests from 8 callers)\n", o.warm)
	fmt.Fprintln(out)
	fmt.Fprintf(out, "The rows per idle connection hold %d requests at the server until all have arrived, so the client opens %d keep-alive connections that then stay in its pool, and divide the heap they add (client and server ends together) by the connections opened.\n", o.conns, o.conns)
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| stack | Go heap (live, after GC) | RSS |")
	fmt.Fprintln(out, "| --- | ---: | ---: |")
	for _, r := range rep.memory {
		fmt.Fprintf(out, "| %s | %s | %s |\n", r.stack, heapSize(r.mem.heap), heapSize(r.mem.rss))
	}
	fmt.Fprintln(out)
}

func printXDS(out io.Writer, rep *report) {
	fmt.Fprintln(out, "### xDS scale (go-control-plane in-process, ADS over loopback)")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "Initial sync: mesh.New to the first answered request(s), every resource fetched and applied. One-endpoint change: the control plane's new snapshot to the first request that reaches the moved endpoint. Heap: the mesh's live heap after the sync.")
	fmt.Fprintln(out)
	fmt.Fprintln(out, "| configuration | initial sync | one-endpoint change | mesh heap | heap per endpoint |")
	fmt.Fprintln(out, "| --- | ---: | ---: | ---: | ---: |")
	var one *scaleResult
	for i, r := range rep.xds {
		if r.clusters == 1 && r.endpoints == 1 {
			one = &rep.xds[i]
		}
	}
	for _, r := range rep.xds {
		per := "—"
		switch {
		// Below a thousand, the difference is within what the rest of the
		// process moves the heap by between two collections.
		case r.clusters == 1 && r.endpoints >= 1000 && one != nil:
			per = kib(float64(r.heap-one.heap) / float64(r.endpoints-1))
		case r.clusters >= 100:
			per = kib(float64(r.heap)/float64(r.clusters)) + " (per cluster)"
		}
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", r.name, ms(r.sync), ms(r.change), mib(r.heap), per)
	}
	fmt.Fprintln(out)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
