//go:build amd64 || arm64

package stackroom

// Reserve4K makes sure the calling goroutine's stack has 4 KiB free below
// the caller's frame, growing it now if it has not.
func Reserve4K()

// Reserve8K makes sure the calling goroutine's stack has 8 KiB free below
// the caller's frame, growing it now if it has not.
func Reserve8K()
