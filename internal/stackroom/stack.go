// Package stackroom grows a goroutine's stack once, while it is shallow,
// instead of several times deep in a request.
//
// A goroutine starts with a small stack (2 KiB) and the runtime doubles it
// whenever a call needs more room, copying it and walking every frame on
// it to move the pointers into it. The walk, not the copy, is the cost: it
// decodes each frame's stack map, so a doubling twenty frames deep costs
// microseconds. Requests run on fresh goroutines all the time: an
// HTTP/2 server runs each request's handler on its own, and callers fan
// out or pace requests on new ones. A request through the mesh needs more
// stack than one through net/http alone, so without help it pays one or
// two more doublings, each with the deepest stack of the request on it.
//
// Reserve4K and Reserve8K, called at the mesh's entry points, ask for the
// room in one step, while only a few frames are on the stack. A stack with
// 4 KiB free below those frames is an 8 KiB one, which the server side of
// an HTTP request through the mesh fits in. The client side reserves 8 KiB:
// net/http asks the request's context, a [Context], for Done deep in its
// transport, and that makes 4 KiB of room of its own. A gRPC call, whose
// path through grpc-go is deeper, needs 16 KiB. When the stack already has the
// room (a connection's long-lived goroutine, a caller's warm one) they
// cost a function call and nothing else: their frames are declared in
// assembly and never written, so unlike a Go function with a large local
// array they clear no memory.
package stackroom
