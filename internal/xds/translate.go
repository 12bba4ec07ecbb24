package xds

import (
	"errors"
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

const resourceWrapperTypeURL = "type.googleapis.com/envoy.service.discovery.v3.Resource"

// ResourceError is a resource the client rejected. It names the resource
// and the field at fault; the NACK's error_detail carries its text. It is a
// value, never mutated after it is returned.
type ResourceError struct {
	Type ResourceType
	// Name is the resource name, or "" when the resource could not be
	// decoded far enough to learn it.
	Name string
	// Field is the dotted path of the offending field.
	Field string
	Err   error
}

func (e *ResourceError) Error() string {
	name := e.Name
	if name == "" {
		name = "<unnamed>"
	}
	if e.Field == "" {
		return fmt.Sprintf("xds: %s resource %q: %v", e.Type, name, e.Err)
	}
	return fmt.Sprintf("xds: %s resource %q: %s: %v", e.Type, name, e.Field, e.Err)
}

func (e *ResourceError) Unwrap() error { return e.Err }

// fieldError is a validation failure inside a resource; decode wraps it in
// a ResourceError once the resource name is known.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return e.field + ": " + e.err.Error() }

func (e *fieldError) Unwrap() error { return e.err }

func ferr(field, format string, args ...any) error {
	return &fieldError{field: field, err: fmt.Errorf(format, args...)}
}

// prefixed prepends a parent path to a fieldError's field.
func prefixed(prefix string, err error) error {
	var fe *fieldError
	if errors.As(err, &fe) {
		return &fieldError{field: prefix + "." + fe.field, err: fe.err}
	}
	return &fieldError{field: prefix, err: err}
}

// Decode unmarshals and translates one resource of type t. A panic inside
// translation is turned into an error: a malformed resource from a control
// plane must never take the process down.
func Decode(t ResourceType, a *anypb.Any) (name string, r Resource, err error) {
	defer func() {
		if p := recover(); p != nil {
			r = nil
			err = &ResourceError{Type: t, Name: name, Err: fmt.Errorf("internal error translating resource: %v", p)}
		}
	}()
	if a.GetTypeUrl() == resourceWrapperTypeURL {
		w := &discoveryv3.Resource{}
		if err := proto.Unmarshal(a.GetValue(), w); err != nil {
			return "", nil, &ResourceError{Type: t, Err: fmt.Errorf("unmarshal Resource wrapper: %w", err)}
		}
		a = w.GetResource()
	}
	if a.GetTypeUrl() != t.TypeURL() {
		return "", nil, &ResourceError{Type: t, Field: "type_url", Err: fmt.Errorf("got %q, want %q", a.GetTypeUrl(), t.TypeURL())}
	}
	var msg proto.Message
	switch t {
	case ListenerType:
		msg = &listenerv3.Listener{}
	case RouteConfigType:
		msg = &routev3.RouteConfiguration{}
	case ClusterType:
		msg = &clusterv3.Cluster{}
	case EndpointsType:
		msg = &endpointv3.ClusterLoadAssignment{}
	default:
		return "", nil, &ResourceError{Type: t, Err: errors.New("unknown resource type")}
	}
	if err := proto.Unmarshal(a.GetValue(), msg); err != nil {
		return "", nil, &ResourceError{Type: t, Err: fmt.Errorf("unmarshal: %w", err)}
	}
	switch m := msg.(type) {
	case *listenerv3.Listener:
		name = m.GetName()
		r, err = finish(translateListener(m))(m, a.GetValue(), listenerApplied)
	case *routev3.RouteConfiguration:
		name = m.GetName()
		r, err = finish(translateRouteConfig(m))(m, a.GetValue(), routeConfigApplied)
	case *clusterv3.Cluster:
		name = m.GetName()
		r, err = finish(translateCluster(m))(m, a.GetValue(), clusterApplied)
	case *endpointv3.ClusterLoadAssignment:
		name = m.GetClusterName()
		r, err = finish(translateEndpoints(m))(m, a.GetValue(), endpointsApplied)
	}
	if err != nil {
		return name, nil, resourceErr(t, name, err)
	}
	return name, r, nil
}

// unappliedSetter is what every model resource's meta provides.
type unappliedSetter interface {
	Resource
	setUnapplied([]string)
}

// finish completes a translation: on success it records the fields of the
// resource's bytes (raw, or m marshalled when raw is nil) that fs does
// not apply, ahead of those the translator noted itself.
func finish[R unappliedSetter](r R, err error) func(m proto.Message, raw []byte, fs fieldSet) (R, error) {
	return func(m proto.Message, raw []byte, fs fieldSet) (R, error) {
		if err != nil {
			var zero R
			return zero, err
		}
		extra := r.UnappliedFields()
		all := append(unappliedOf(m, raw, fs), extra...)
		slices.Sort(all)
		r.setUnapplied(slices.Compact(all))
		return r, nil
	}
}

// resourceErr turns a translation failure into a ResourceError naming the
// resource and, when known, the field.
func resourceErr(t ResourceType, name string, err error) error {
	re := &ResourceError{Type: t, Name: name, Err: err}
	var fe *fieldError
	if errors.As(err, &fe) {
		re.Field, re.Err = fe.field, fe.err
	}
	return re
}

// TranslateListener validates a client-side API Listener. An error is a
// *ResourceError.
func TranslateListener(l *listenerv3.Listener) (*Listener, error) {
	out, err := finish(translateListener(l))(l, nil, listenerApplied)
	if err != nil {
		return nil, resourceErr(ListenerType, l.GetName(), err)
	}
	return out, nil
}

func translateListener(l *listenerv3.Listener) (*Listener, error) {
	out := &Listener{meta: meta{Name: l.GetName()}}
	api := l.GetApiListener().GetApiListener()
	if api == nil {
		if len(l.GetFilterChains()) > 0 || l.GetDefaultFilterChain() != nil {
			return out, translateServerListener(l, out)
		}
		return nil, ferr("api_listener", "missing, and no filter_chains: neither a client nor a server listener")
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := api.UnmarshalTo(hcm); err != nil {
		return nil, ferr("api_listener.api_listener", "not an HttpConnectionManager: %v", err)
	}
	const hp = "api_listener.api_listener"
	out.Unapplied = unappliedFields(api.GetValue(), hcm.ProtoReflect().Descriptor(), hcmApplied, hp+".")
	name, rc, err := translateRouteSpecifier(hcm, hp)
	if err != nil {
		return nil, err
	}
	out.RouteConfigName, out.RouteConfig = name, rc
	filters := hcm.GetHttpFilters()
	if len(filters) == 0 {
		return nil, ferr(hp+".http_filters", "empty: the router filter is required")
	}
	for i, f := range filters {
		isRouter := f.GetTypedConfig().MessageIs((*routerv3.Router)(nil))
		last := i == len(filters)-1
		switch {
		case isRouter && !last:
			return nil, ferr(fmt.Sprintf("%s.http_filters[%d]", hp, i), "router filter %q is not last", f.GetName())
		case !isRouter && last:
			return nil, ferr(fmt.Sprintf("%s.http_filters[%d]", hp, i), "last filter %q is not the router", f.GetName())
		case isStatefulSession(f.GetTypedConfig()):
			field := fmt.Sprintf("%s.http_filters[%d]", hp, i)
			c, unapplied, err := translateStatefulSession(f.GetTypedConfig())
			if err != nil {
				return nil, prefixed(field+".typed_config", err)
			}
			for _, u := range unapplied {
				out.Unapplied = append(out.Unapplied, fmt.Sprintf("%s.http_filters[%s].%s", hp, f.GetName(), u))
			}
			out.StatefulSession = c
		case isFault(f.GetTypedConfig()):
			field := fmt.Sprintf("%s.http_filters[%d]", hp, i)
			c, unapplied, err := translateFault(f.GetTypedConfig())
			if err != nil {
				return nil, prefixed(field+".typed_config", err)
			}
			for _, u := range unapplied {
				out.Unapplied = append(out.Unapplied, fmt.Sprintf("%s.http_filters[%s].%s", hp, f.GetName(), u))
			}
			// A disabled filter waits for a route to enable it with a
			// config of its own.
			c.Disabled = f.GetDisabled()
			out.Faults = append(out.Faults, FaultFilter{Name: f.GetName(), Config: c})
		case !isRouter:
			out.Unapplied = append(out.Unapplied, fmt.Sprintf("%s.http_filters[%s]", hp, f.GetName()))
		}
	}
	if d := hcm.GetCommonHttpProtocolOptions().GetMaxStreamDuration(); d != nil {
		v, err := duration(d)
		if err != nil {
			return nil, prefixed(hp+".common_http_protocol_options.max_stream_duration", err)
		}
		out.MaxStreamDuration = v
	}
	return out, nil
}

// translateRouteSpecifier reads where an HttpConnectionManager's routes
// come from: an RDS name, or an inline configuration. hp is the manager's
// field path, for errors.
func translateRouteSpecifier(hcm *hcmv3.HttpConnectionManager, hp string) (rdsName string, inline *RouteConfig, err error) {
	switch rs := hcm.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_Rds:
		if err := checkConfigSource(rs.Rds.GetConfigSource()); err != nil {
			return "", nil, prefixed(hp+".rds.config_source", err)
		}
		if rs.Rds.GetRouteConfigName() == "" {
			return "", nil, ferr(hp+".rds.route_config_name", "empty")
		}
		return rs.Rds.GetRouteConfigName(), nil, nil
	case *hcmv3.HttpConnectionManager_RouteConfig:
		rc, err := translateRouteConfig(rs.RouteConfig)
		if err != nil {
			return "", nil, prefixed(hp+".route_config", err)
		}
		// The listener's walk of the HttpConnectionManager covers the
		// inline configuration's fields.
		rc.Unapplied = unappliedOf(rs.RouteConfig, nil, routeConfigApplied)
		return "", rc, nil
	case nil:
		return "", nil, ferr(hp+".route_specifier", "neither rds nor route_config is set")
	default:
		return "", nil, ferr(hp+".route_specifier", "unsupported %T", rs)
	}
}

// checkConfigSource accepts the config sources grpc-go accepts: ADS or self.
func checkConfigSource(cs *corev3.ConfigSource) error {
	if cs.GetAds() == nil && cs.GetSelf() == nil {
		return errors.New("must be ads or self")
	}
	return nil
}

func duration(d *durationpb.Duration) (time.Duration, error) {
	if err := d.CheckValid(); err != nil {
		return 0, err
	}
	if d.GetSeconds() < 0 || d.GetNanos() < 0 {
		return 0, errors.New("negative duration")
	}
	return d.AsDuration(), nil
}
