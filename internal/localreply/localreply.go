// Package localreply builds the HTTP responses the mesh answers in a
// server's place, as Envoy answers them locally: a redirect or direct
// response route, a fault filter's abort, a circuit-breaker overflow. One
// builder, so every local answer has the same shape: a status line, a
// Content-Length that says what a GET gets, and no body for HEAD.
package localreply

import (
	"io"
	"net/http"
	"strconv"
	"strings"
)

// New answers req with code, hdr (which it owns from then on) and body.
// Content-Length is set to the body's length, also for HEAD, whose
// response carries no body (RFC 9110, 9.3.2).
func New(req *http.Request, code int, hdr http.Header, body string) *http.Response {
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	resp := &http.Response{
		Status:     strconv.Itoa(code) + " " + http.StatusText(code),
		StatusCode: code,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        hdr,
		Body:          http.NoBody,
		ContentLength: int64(len(body)),
		Request:       req,
	}
	if body != "" && req.Method != http.MethodHead {
		resp.Body = io.NopCloser(strings.NewReader(body))
	}
	return resp
}
