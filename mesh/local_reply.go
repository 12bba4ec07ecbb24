package mesh

import (
	"context"
	"errors"
	"net/http"

	"github.com/weftmesh/weft/internal/localreply"
	"github.com/weftmesh/weft/resilience"
)

// Local replies: the HTTP answers the mesh gives in Envoy's place, where
// a sidecar would have answered the caller itself rather than fail the
// connection. A caller written for a sidecar reads a status; a Go caller
// still reaches the typed error through LocalReplyError.

// OverloadedHeader is the header Envoy sets, to "true", on the 503 it
// answers when a circuit-breaker threshold refuses a request; the mesh
// sets it on the same answer.
const OverloadedHeader = "X-Envoy-Overloaded"

// overflowBody is Envoy's body for that 503: the router's local reply for
// an upstream reset whose reason is overflow.
const overflowBody = "upstream connect error or disconnect/reset before headers. reset reason: overflow"

// localReplyKey keys, in the context of a local reply's Request, the error
// the reply stands for.
type localReplyKey struct{}

// LocalReplyError returns the error behind resp when resp is an answer the
// mesh made itself, in Envoy's place, instead of failing the request; nil
// for a response an upstream sent (and for a redirect or direct-response
// route's answer, which is no failure).
//
// Today that is the 503 of a circuit-breaker overflow: a cluster's
// max_requests (or max_pending_requests) threshold from CDS, or
// WithCircuitBreaker's, refused the request. Envoy answers it with 503,
// x-envoy-overloaded: true and the body "upstream connect error or
// disconnect/reset before headers. reset reason: overflow"; the mesh
// answers the same, and the error, a *ServiceError wrapping a
// *resilience.OverflowError, satisfies errors.Is(err,
// resilience.ErrOverflow). A retry that max_retries refused is not such
// an answer: as in Envoy, the caller gets the last attempt's outcome (its
// response, or its error, which then wraps resilience.ErrOverflow).
//
// The error travels in the context of resp.Request, a shallow copy of the
// caller's request, so it survives body wrappers such as http.Client's
// timeout.
func LocalReplyError(resp *http.Response) error {
	if resp == nil || resp.Request == nil {
		return nil
	}
	err, _ := resp.Request.Context().Value(localReplyKey{}).(error)
	return err
}

// isLocalReply reports whether resp carries a LocalReplyError, so that
// its Request is left as made.
func isLocalReply(resp *http.Response) bool { return LocalReplyError(resp) != nil }

// overflowReply turns a refusal by a cluster's thresholds into Envoy's
// answer to it; nil for any other error. A refused retry is not turned:
// its error is the last attempt's, as Envoy's answer is. Only failed
// requests come here (see transport.failed).
func overflowReply(req *http.Request, service string, err error) *http.Response {
	var oe *resilience.OverflowError
	if !errors.As(err, &oe) || oe.Threshold == resilience.ThresholdMaxRetries {
		return nil
	}
	hdr := http.Header{"Content-Type": {"text/plain"}, OverloadedHeader: {"true"}}
	rctx := context.WithValue(req.Context(), localReplyKey{}, error(&ServiceError{Service: service, Err: err}))
	return localreply.New(req.WithContext(rctx), http.StatusServiceUnavailable, hdr, overflowBody)
}
