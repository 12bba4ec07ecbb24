package fileutil_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/fileutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	exact := filepath.Join(dir, "exact")
	if err := os.WriteFile(exact, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		wantLen int
		wantErr error
		wantMsg string
	}{
		{"regular", small, 5, nil, ""},
		{"at the limit", exact, 1 << 20, nil, ""},
		{"over the limit", big, 0, fileutil.ErrTooLarge, "larger than the limit of 1 MiB"},
		{"fifo without writer", fifo, 0, fileutil.ErrNotRegular, "named pipe"},
		{"symlink to a fifo", link, 0, fileutil.ErrNotRegular, "named pipe"},
		{"device", "/dev/zero", 0, fileutil.ErrNotRegular, "device"},
		{"directory", dir, 0, fileutil.ErrNotRegular, "directory"},
		{"missing", filepath.Join(dir, "none"), 0, os.ErrNotExist, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan struct{})
			var (
				got []byte
				err error
			)
			go func() {
				defer close(done)
				got, err = fileutil.ReadFile(ctx, tt.path, 1<<20)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("ReadFile(%s) still blocked after 10s", tt.path)
			}
			if tt.wantErr == nil {
				if err != nil || len(got) != tt.wantLen {
					t.Fatalf("ReadFile(%s) = %d bytes, %v; want %d bytes", tt.path, len(got), err, tt.wantLen)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReadFile(%s) error = %v, want %v", tt.path, err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), tt.path) {
				t.Errorf("ReadFile(%s) error = %q, want it to name the file and say %q", tt.path, err, tt.wantMsg)
			}
		})
	}
}

func TestReadFileHonoursContext(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := fileutil.ReadFile(ctx, p, 10); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadFile with an ended context: err = %v, want context.Canceled", err)
	}
}
