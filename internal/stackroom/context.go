package stackroom

import "context"

// Context is a context whose Done makes 4 KiB of room on the calling
// goroutine's stack before it answers; everything else is the embedded
// context's.
//
// It is for goroutines that other code starts per request and that reach
// nothing of the mesh's but the request's context. net/http's HTTP/2
// client writes each request's headers from a goroutine started for that
// request, and that goroutine asks the request's context for Done before
// it encodes them. Encoding doubles its 2 KiB stack once, deep in
// net/http, and a header whose value is new on every request (traceparent,
// a request ID) makes HPACK evict table entries deeper still, which
// doubles it again: two copies, the second walking some fifteen frames.
// Sent with a Context, the request's headers cost one doubling, three
// frames deep.
//
// The transport's caller asks for Done too, on its own goroutine, several
// frames into net/http: the mesh reserves 8 KiB where a request enters it
// so that those calls find the room already there.
//
// Use it by pointer, embedded in something the request already allocates,
// so that it costs no allocation of its own.
type Context struct{ context.Context }

// Done makes 4 KiB of room on the calling goroutine's stack and returns
// the embedded context's Done channel.
func (c *Context) Done() <-chan struct{} {
	Reserve4K()
	return c.Context.Done()
}
