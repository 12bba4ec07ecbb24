package resilience

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/weftmesh/weft/balancer"
)

// HTTPOutcome classifies one HTTP attempt in the balancer's terms: a
// response by its status (5xx other than 502-504 is ServerError, 502-504
// GatewayError, the rest Success), an error by where the exchange broke.
// ErrCircuitOpen, ErrOverflow and ErrRateLimited are Canceled: the request
// was refused before it reached any endpoint.
func HTTPOutcome(resp *http.Response, err error) balancer.Outcome {
	if err != nil {
		return errorOutcome(err)
	}
	if resp == nil {
		return balancer.Success
	}
	return statusOutcome(resp.StatusCode)
}

func statusOutcome(code int) balancer.Outcome {
	switch {
	case code == http.StatusBadGateway, code == http.StatusServiceUnavailable, code == http.StatusGatewayTimeout:
		return balancer.GatewayError
	case code >= 500 && code <= 599:
		return balancer.ServerError
	}
	return balancer.Success
}

// errorOutcome classifies a transport error. Dial errors are connect
// failures; a deadline is a timeout; a cancellation is the caller's; every
// other break after the connection existed is a reset. A refusal by this
// package's own breakers and limits is Canceled: the request never left, so
// it says nothing about the endpoint and must not feed back into the
// breaker or be retried.
func errorOutcome(err error) balancer.Outcome {
	switch {
	case errors.Is(err, context.Canceled), isLocalRefusal(err):
		return balancer.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return balancer.Timeout
	case isConnectFailure(err):
		return balancer.ConnectFailure
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return balancer.Timeout
	}
	return balancer.Reset
}

func isConnectFailure(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// isRefusedStream reports an HTTP/2 REFUSED_STREAM. The HTTP/2 error types
// are unexported in net/http's bundled copy, so their text is all there is.
func isRefusedStream(err error) bool {
	return err != nil && strings.Contains(err.Error(), "REFUSED_STREAM")
}

func isLocalRefusal(err error) bool {
	return errors.Is(err, ErrCircuitOpen) || errors.Is(err, ErrOverflow) || errors.Is(err, ErrRateLimited)
}
