// Command quickstart runs a small shop on one machine, with nothing
// installed but Go, and walks through what a service mesh is for while
// traffic flows: a canary, a header route for testers, a traffic shift, a
// failing replica, a slow dependency, a denied caller and a rollback.
//
// Everything runs in this process on 127.0.0.1: a development xDS control
// plane (devplane) configured from YAML, a development SPIFFE trust domain
// giving every workload its identity so that every hop is mutual TLS, an
// HTTP service "orders" (v1 with two replicas, v2 with one) calling a gRPC
// service "inventory", and a frontend sending a steady load to
// http://orders:8080/ through Weft, which knows orders only by name. Every
// figure printed is measured from the requests sent.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -duration 40s -rate 200 -v
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
	"sync"
	"time"
)

func main() {
	duration := flag.Duration("duration", 20*time.Second, "how long the story runs, all steps included")
	rate := flag.Int("rate", 150, "requests per second the frontend sends")
	verbose := flag.Bool("v", false, "log the mesh's and the control plane's events to stderr, and print the configs applied")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	o := options{duration: *duration, rate: *rate, verbose: *verbose, ansi: isTerminal(os.Stdout)}
	if *verbose {
		o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	_, err := story(ctx, os.Stdout, o)
	switch {
	case errors.Is(err, errInterrupted):
		fmt.Fprintln(os.Stderr, "quickstart: interrupted")
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// isTerminal reports whether f is a character device, so that escape
// sequences are only written where a terminal interprets them.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// options are the flags of a run.
type options struct {
	duration time.Duration
	rate     int
	verbose  bool
	ansi     bool
	log      *slog.Logger // nil: warnings and errors only, to stderr
}

func (o *options) check() error {
	if o.duration < 5*time.Second || o.duration > 10*time.Minute {
		return fmt.Errorf("-duration must be from 5s to 10m, got %v", o.duration)
	}
	if o.rate < 20 || o.rate > 2000 {
		return fmt.Errorf("-rate must be from 20 to 2000, got %d", o.rate)
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return nil
}

// printer writes the story's lines, bold headings only on a terminal. The
// live lines come from another goroutine, hence the lock.
type printer struct {
	mu   *sync.Mutex
	out  io.Writer
	ansi bool
}

func (p printer) write(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.out, s)
}

func (p printer) heading(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if p.ansi {
		s = "\x1b[1m" + s + "\x1b[0m"
	}
	p.write(s)
}

func (p printer) line(format string, args ...any) { p.write(fmt.Sprintf(format, args...)) }

func (p printer) dim(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if p.ansi {
		s = "\x1b[2m" + s + "\x1b[0m"
	}
	p.write(s)
}
