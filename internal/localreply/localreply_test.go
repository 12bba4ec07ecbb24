package localreply

import (
	"io"
	"net/http"
	"strconv"
	"testing"
)

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		method, body string
		wantBody     string
	}{
		{http.MethodGet, "fault filter abort", "fault filter abort"},
		{http.MethodHead, "fault filter abort", ""}, // RFC 9110: no body, the length a GET gets
		{http.MethodGet, "", ""},
	} {
		req, _ := http.NewRequest(tc.method, "http://orders/items", nil)
		resp := New(req, http.StatusServiceUnavailable, http.Header{"X-Envoy-Overloaded": {"true"}}, tc.body)
		got, _ := io.ReadAll(resp.Body)
		if resp.Status != "503 Service Unavailable" || resp.Request != req || string(got) != tc.wantBody ||
			resp.ContentLength != int64(len(tc.body)) || resp.Header.Get("Content-Length") != strconv.Itoa(len(tc.body)) ||
			resp.Header.Get("X-Envoy-Overloaded") != "true" {
			t.Errorf("%s %q: status %q, body %q, length %d / %q, header %v", tc.method, tc.body, resp.Status, got,
				resp.ContentLength, resp.Header.Get("Content-Length"), resp.Header)
		}
	}
}
