// Command controlplane is an xDS management server for development: it
// serves the services described in a YAML file to Weft and to grpc-go xDS
// clients, writes the bootstrap file they need, and reloads the YAML when
// it changes.
//
//	go run ./examples/controlplane -config examples/controlplane/mesh.yaml
//	export GRPC_XDS_BOOTSTRAP=$PWD/bootstrap.json
//
// It serves until interrupted. See package devplane for the file's format.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/weftmesh/weft/examples/controlplane/devplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. ready, when non-nil, receives the address
// served once the server is up.
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- string) error {
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "mesh config `file` (YAML); required")
	addr := fs.String("addr", "127.0.0.1:18000", "address to serve xDS on")
	bootstrap := fs.String("bootstrap", "./bootstrap.json", "where to write the gRPC xDS bootstrap; empty to skip")
	node := fs.String("node", "weft-dev", "node id written in the bootstrap")
	interval := fs.Duration("interval", time.Second, "how often to check the config file for changes")
	verbose := fs.Bool("v", false, "log every xDS watch and response")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		fs.Usage()
		return errors.New("-config is required")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	srv := devplane.New(devplane.WithLogger(logger))
	defer srv.Close()
	stopWatch, err := srv.WatchFile(ctx, *configPath, *interval)
	if err != nil {
		return err
	}
	defer stopWatch()
	served, err := srv.Start(*addr)
	if err != nil {
		return err
	}
	if *bootstrap != "" {
		if err := devplane.WriteBootstrap(*bootstrap, served, *node); err != nil {
			return err
		}
		abs, _ := filepath.Abs(*bootstrap)
		logger.Info("bootstrap written; point clients at it", "GRPC_XDS_BOOTSTRAP", abs)
	}
	logger.Info("serving xDS", "addr", served, "config", *configPath)
	if ready != nil {
		ready <- served
	}
	<-ctx.Done()
	logger.Info("shutting down")
	return nil
}
