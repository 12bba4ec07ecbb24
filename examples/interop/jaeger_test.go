package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/weftmesh/weft/mesh"
)

var jaeger = tool{
	name:    "jaeger",
	module:  "github.com/jaegertracing/jaeger",
	version: "v1.76.0",
	cmds:    []string{"github.com/jaegertracing/jaeger/cmd/jaeger"},
	// Jaeger's own go.mod replace, which a module requiring it must copy.
	gomod: "\nreplace github.com/Shopify/sarama => github.com/Shopify/sarama v1.33.0\n",
	env:   []string{"GONOSUMDB=github.com/open-telemetry,go.opentelemetry.io"},
}

// jaegerConf is Jaeger v2 all-in-one with in-memory storage: OTLP in,
// the query API out, every listener on a loopback port of the test's.
const jaegerConf = `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: {level: none}
    logs: {level: info}
extensions:
  jaeger_storage:
    backends:
      mem: {memory: {max_traces: 1000}}
  jaeger_query:
    storage: {traces: mem}
    http: {endpoint: "127.0.0.1:%d"}
    grpc: {endpoint: "127.0.0.1:%d"}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:%d"}
processors:
  batch: {timeout: 100ms}
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return port(l)
}

// jaegerTrace is the part of Jaeger's query API answer the test reads.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		TraceID       string `json:"traceID"`
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		ProcessID     string `json:"processID"`
		References    []struct {
			RefType string `json:"refType"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

// TestJaeger: one request across two Weft services (frontend calls orders
// over HTTP and gRPC), exported with OTLP as configured by OTEL_*
// variables, is one trace in Jaeger, with orders' spans children of
// frontend's.
func TestJaeger(t *testing.T) {
	bins := jaeger.binaries(t)
	queryPort, otlpPort := freePort(t), freePort(t)
	conf := filepath.Join(t.TempDir(), "jaeger.yaml")
	os.WriteFile(conf, []byte(fmt.Sprintf(jaegerConf, queryPort, freePort(t), otlpPort)), 0o600)
	process(t, bins["jaeger"], "--config", conf)
	api := fmt.Sprintf("http://127.0.0.1:%d/api", queryPort)
	if err := eventually(60*time.Second, func() error {
		code, body, err := httpGet(context.Background(), http.DefaultClient, api+"/services")
		if err == nil && code != http.StatusOK {
			err = statusErr(code, body)
		}
		return err
	}); err != nil {
		t.Fatalf("Jaeger's query API never answered: %v", err)
	}

	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", fmt.Sprintf("http://127.0.0.1:%d", otlpPort))
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	orders, err := mesh.New(ctx, mesh.WithServiceName("orders"))
	if err != nil {
		t.Fatal(err)
	}
	ohl, ogl := listenT(t, "127.0.0.1"), listenT(t, "127.0.0.1")
	go orders.Serve(ctx, ohl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "orders") }))
	gs, err := orders.NewGRPCServer()
	if err != nil {
		t.Fatal(err)
	}
	testpb.RegisterTestServiceServer(gs, grpcEcho{b: &behaviour{name: "orders"}})
	go gs.Serve(ogl)

	frontend, err := mesh.New(ctx, mesh.WithServiceName("frontend"),
		mesh.WithEndpoints("orders", ohl.Addr().String()), mesh.WithEndpoints("orders-grpc", ogl.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := frontend.DialGRPC("orders-grpc")
	if err != nil {
		t.Fatal(err)
	}
	fl := listenT(t, "127.0.0.1")
	go frontend.Serve(ctx, fl, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, body, err := httpGet(r.Context(), frontend.HTTPClient(), "http://orders/items")
		if err != nil || code != http.StatusOK {
			http.Error(w, fmt.Sprint(code, body, err), http.StatusBadGateway)
			return
		}
		if _, err := grpcServerID(r.Context(), cc); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.WriteString(w, "frontend via "+body)
	}))

	code, body, err := httpGet(ctx, http.DefaultClient, "http://"+fl.Addr().String()+"/checkout")
	if err != nil || code != http.StatusOK {
		t.Fatalf("request: %d %q %v", code, body, err)
	}
	// Close flushes the exporters.
	cc.Close()
	gs.Stop()
	frontend.Close()
	orders.Close()

	var traces []jaegerTrace
	err = eventually(30*time.Second, func() error {
		_, b, err := httpGet(ctx, http.DefaultClient, api+"/traces?service=frontend&limit=20")
		if err != nil {
			return err
		}
		var resp struct{ Data []jaegerTrace }
		if err := json.Unmarshal([]byte(b), &resp); err != nil {
			return err
		}
		traces = resp.Data
		if len(traces) != 1 || len(traces[0].Spans) < 5 {
			return fmt.Errorf("%d traces (%v), want one with five spans", len(traces), traces)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Jaeger: %v", err)
	}
	tr := traces[0]
	spans := map[string]string{} // span id -> service
	for _, s := range tr.Spans {
		spans[s.SpanID] = tr.Processes[s.ProcessID].ServiceName
	}
	byService := map[string]int{}
	crossings := 0
	for _, s := range tr.Spans {
		svc := tr.Processes[s.ProcessID].ServiceName
		byService[svc]++
		t.Logf("trace %s: %s %q", s.TraceID, svc, s.OperationName)
		if s.TraceID != tr.TraceID {
			t.Errorf("span %s is in trace %s, not %s", s.SpanID, s.TraceID, tr.TraceID)
		}
		for _, ref := range s.References {
			if svc == "orders" && ref.RefType == "CHILD_OF" && spans[ref.SpanID] == "frontend" {
				crossings++
			}
		}
	}
	if byService["frontend"] < 3 || byService["orders"] < 2 {
		t.Errorf("spans by service %v, want frontend's server, HTTP and gRPC client spans and orders' two server spans", byService)
	}
	if crossings != 2 {
		t.Errorf("%d orders spans are children of frontend spans, want 2 (HTTP and gRPC)", crossings)
	}
}
