// Package fileutil reads the files Weft's configuration names (the xDS
// bootstrap, the authorization policy, SVID and bundle PEM files) with the
// same guards everywhere: a size limit, only regular files, and the
// caller's context.
package fileutil

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Limits on the files Weft reads from its configuration. They are far above
// what a real file holds, and low enough that a mistaken path (a log, a
// disk image, /dev/zero) fails at once instead of exhausting memory.
const (
	// MaxConfigFile bounds the xDS bootstrap and the authorization policy
	// file.
	MaxConfigFile = 16 << 20
	// MaxPEMFile bounds each SVID certificate, key and bundle PEM file.
	MaxPEMFile = 1 << 20
)

// ErrTooLarge and ErrNotRegular are wrapped by ReadFile's errors, which are
// *fs.PathError values naming the file, as those of os.Open are.
var (
	ErrTooLarge   = errors.New("larger than the limit")
	ErrNotRegular = errors.New("not a regular file")
)

// chunk is how much ReadFile reads between two looks at its context.
const chunk = 64 << 10

// ReadFile returns the contents of the file name, at most limit bytes.
// Anything but a regular file (a FIFO, a device, a socket, a directory),
// even through a symbolic link, is refused without blocking: the file is
// opened non-blocking and checked before a byte is read, so a FIFO with no
// writer cannot hang the caller. A file larger than limit is refused, as
// is one that grows past it while being read. When ctx ends first,
// ReadFile returns ctx's error.
func ReadFile(ctx context.Context, name string, limit int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%s is %w", describe(fi.Mode()), ErrNotRegular)}
	}
	if fi.Size() > limit {
		return nil, tooLarge(name, limit)
	}
	// The size is a hint (files under /proc report 0, a file may grow):
	// the read itself stops one byte past the limit.
	var buf bytes.Buffer
	buf.Grow(int(min(fi.Size(), limit)) + 1)
	r := io.LimitReader(f, limit+1)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		_, err := io.CopyN(&buf, r, chunk)
		if int64(buf.Len()) > limit {
			return nil, tooLarge(name, limit)
		}
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}

func tooLarge(name string, limit int64) error {
	return &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w of %s", ErrTooLarge, Size(limit))}
}

// Size renders a limit for messages and documentation: "16 MiB".
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func describe(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case m&fs.ModeDevice != 0, m&fs.ModeCharDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsDir():
		return "a directory"
	}
	return "a file of type " + m.Type().String()
}
