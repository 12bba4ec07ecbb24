//go:build !amd64 && !arm64

package stackroom

// Reserve4K does nothing on this architecture: the stack grows when a call
// needs it, as it would without the mesh. (A Go function with a large
// frame would have to clear it on every call.)
func Reserve4K() {}

// Reserve8K does nothing on this architecture; see Reserve4K.
func Reserve8K() {}
