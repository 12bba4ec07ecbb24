package respbody

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

type slot struct{ released int }

func (s *slot) ReleaseRequest() { s.released++ }

type failing struct{ err error }

func (f failing) Read([]byte) (int, error) { return 0, f.err }
func (failing) Close() error               { return nil }

// TestReleasesOnce checks every way a body ends: each releases the slot,
// cancels both contexts and runs Done exactly once, however the ways
// follow one another.
func TestReleasesOnce(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name string
		body io.ReadCloser
		use  func(b *Body)
	}{
		{"read to EOF, never closed", io.NopCloser(strings.NewReader("hello")), func(b *Body) { io.ReadAll(b) }},
		{"read to EOF, then closed twice", io.NopCloser(strings.NewReader("hello")), func(b *Body) { io.ReadAll(b); b.Close(); b.Close() }},
		{"closed unread", io.NopCloser(strings.NewReader("hello")), func(b *Body) { b.Close() }},
		{"read fails, then closed", failing{boom}, func(b *Body) { b.Read(make([]byte, 1)); b.Read(make([]byte, 1)); b.Close() }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s slot
			var tries, routes, dones int
			_, cancelTry := context.WithCancelCause(context.Background())
			b := &Body{ReadCloser: c.body, Slot: &s,
				CancelTry:   func(err error) { tries++; cancelTry(err) },
				CancelRoute: func() { routes++ },
				Done:        func() { dones++ }}
			if b.Released() {
				t.Fatal("released before use")
			}
			c.use(b)
			if !b.Released() || s.released != 1 || tries != 1 || routes != 1 || dones != 1 {
				t.Errorf("released %v: slot %d, try %d, route %d, done %d; want each once", b.Released(), s.released, tries, routes, dones)
			}
		})
	}
}

// TestPartialReadHoldsTheSlot checks that a body read in part holds its
// slot: the request is still in flight until the body is done.
func TestPartialReadHoldsTheSlot(t *testing.T) {
	var s slot
	b := &Body{ReadCloser: io.NopCloser(strings.NewReader("hello")), Slot: &s}
	if _, err := b.Read(make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	if s.released != 0 || b.Released() {
		t.Fatalf("released after a partial read")
	}
	b.Close()
	if s.released != 1 {
		t.Fatalf("slot released %d times after Close, want 1", s.released)
	}
}

// TestNoWorkSet checks that a body with nothing to release still reads
// and closes.
func TestNoWorkSet(t *testing.T) {
	b := &Body{ReadCloser: io.NopCloser(strings.NewReader("hi"))}
	if got, err := io.ReadAll(b); err != nil || string(got) != "hi" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := b.Close(); err != nil || !b.Released() {
		t.Fatalf("close: %v, released %v", err, b.Released())
	}
}
