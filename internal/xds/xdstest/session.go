package xdstest

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	statefulsessionv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/stateful_session/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cookiev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/stateful_session/cookie/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/type/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// StatefulSession returns the stateful session filter config of gRFC A55
// with a CookieBasedSessionState cookie named name (path and ttl as given;
// "" and 0 leave them unset).
func StatefulSession(name, path string, ttl time.Duration) *statefulsessionv3.StatefulSession {
	c := &httpv3.Cookie{Name: name, Path: path}
	if ttl != 0 {
		c.Ttl = durationpb.New(ttl)
	}
	return &statefulsessionv3.StatefulSession{SessionState: &corev3.TypedExtensionConfig{
		Name:        "envoy.http.stateful_session.cookie",
		TypedConfig: mustAny(&cookiev3.CookieBasedSessionState{Cookie: c}),
	}}
}

// WithStatefulSession returns hcm with ss as an HTTP filter ahead of the
// router.
func WithStatefulSession(hcm *hcmv3.HttpConnectionManager, ss *statefulsessionv3.StatefulSession) *hcmv3.HttpConnectionManager {
	f := &hcmv3.HttpFilter{Name: "envoy.filters.http.stateful_session", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(ss)}}
	hcm.HttpFilters = append([]*hcmv3.HttpFilter{f}, hcm.HttpFilters...)
	return hcm
}

// WithFault returns hcm with an HTTPFault filter named name ahead of the
// router (and after the filters already there), as istiod installs it on
// client listeners.
func WithFault(hcm *hcmv3.HttpConnectionManager, name string, f *faultv3.HTTPFault) *hcmv3.HttpConnectionManager {
	fl := &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(f)}}
	n := len(hcm.HttpFilters)
	hcm.HttpFilters = append(hcm.HttpFilters[:n-1:n-1], fl, hcm.HttpFilters[n-1])
	return hcm
}
