package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/xds"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRunServesTheExampleAndWritesTheBootstrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bootstrap := filepath.Join(t.TempDir(), "bootstrap.json")
	var logs bytes.Buffer
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-config", "mesh.yaml", "-addr", "127.0.0.1:0", "-bootstrap", bootstrap}, &logs, ready)
	}()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("run returned early: %v\n%s", err, logs.String())
	}
	data, err := os.ReadFile(bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	b, err := xds.ParseBootstrap(data)
	if err != nil || b.Servers[0].URI != addr {
		t.Errorf("bootstrap %s: %+v, %v; want server %s", data, b, err, addr)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if !strings.Contains(logs.String(), "config applied") {
		t.Errorf("logs do not show the config applied:\n%s", logs.String())
	}
}

func TestRunNeedsAConfig(t *testing.T) {
	var logs bytes.Buffer
	if err := run(context.Background(), nil, &logs, nil); err == nil || !strings.Contains(err.Error(), "-config is required") {
		t.Errorf("run without -config: %v", err)
	}
}
