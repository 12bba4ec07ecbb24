package xds

import (
	"fmt"
	"slices"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	commonfaultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Fault injection (gRFC A33): Envoy's HTTPFault filter on a client
// listener, and its per-route overrides. A config Envoy's own validation
// would refuse (an abort or a delay that says neither what nor how long,
// an HTTP status outside [200, 600), an unknown percentage denominator) is
// a field error, so the resource is NACKed naming it; a fault is never
// half applied.

// HTTPFaultTypeURL is the type URL of the fault filter's config.
const HTTPFaultTypeURL = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"

// faultApplied is the fields of an HTTPFault Weft applies. The runtime
// keys have no runtime to read (their defaults are the config's, which is
// what applies), and response_rate_limit is not implemented: both are
// reported.
var faultApplied = newFieldSet(
	"delay.fixed_delay", "delay.header_delay", "delay.percentage", "delay.type",
	"abort.http_status", "abort.grpc_status", "abort.header_abort", "abort.percentage",
	"upstream_cluster", "headers", "downstream_nodes", "max_active_faults")

// isFault reports whether an HTTP filter's config is the fault filter.
func isFault(a *anypb.Any) bool { return a.MessageIs((*faultv3.HTTPFault)(nil)) }

// translateFault reads an HTTPFault config. The fields Weft does not
// apply are returned as paths under the config.
func translateFault(a *anypb.Any) (*Fault, []string, error) {
	hf := &faultv3.HTTPFault{}
	if err := a.UnmarshalTo(hf); err != nil {
		return nil, nil, ferr("typed_config", "not an HTTPFault: %v", err)
	}
	f, err := fault(hf)
	if err != nil {
		return nil, nil, err
	}
	return f, unappliedFields(a.GetValue(), hf.ProtoReflect().Descriptor(), faultApplied, ""), nil
}

func fault(hf *faultv3.HTTPFault) (*Fault, error) {
	out := &Fault{UpstreamCluster: hf.GetUpstreamCluster(), DownstreamNodes: hf.GetDownstreamNodes()}
	if d := hf.GetDelay(); d != nil {
		fd := &FaultDelay{}
		switch s := d.GetFaultDelaySecifier().(type) {
		case *commonfaultv3.FaultDelay_FixedDelay:
			v, err := duration(s.FixedDelay)
			if err != nil {
				return nil, prefixed("delay.fixed_delay", err)
			}
			if v == 0 {
				return nil, ferr("delay.fixed_delay", "must be above 0")
			}
			fd.Fixed = v
		case *commonfaultv3.FaultDelay_HeaderDelay_:
			fd.FromHeader = true
		default:
			return nil, ferr("delay", "sets neither fixed_delay nor header_delay")
		}
		p, err := faultPercent(d.GetPercentage())
		if err != nil {
			return nil, prefixed("delay.percentage", err)
		}
		fd.Percent = p
		out.Delay = fd
	}
	if a := hf.GetAbort(); a != nil {
		fa := &FaultAbort{}
		switch s := a.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			if s.HttpStatus < 200 || s.HttpStatus >= 600 {
				return nil, ferr("abort.http_status", "%d is not an HTTP status in [200, 600)", s.HttpStatus)
			}
			fa.Kind, fa.HTTPStatus = AbortHTTPStatus, s.HttpStatus
		case *faultv3.FaultAbort_GrpcStatus:
			fa.Kind, fa.GRPCStatus = AbortGRPCStatus, s.GrpcStatus
		case *faultv3.FaultAbort_HeaderAbort_:
			fa.Kind = AbortFromHeader
		default:
			return nil, ferr("abort", "sets none of http_status, grpc_status and header_abort")
		}
		p, err := faultPercent(a.GetPercentage())
		if err != nil {
			return nil, prefixed("abort.percentage", err)
		}
		fa.Percent = p
		out.Abort = fa
	}
	if m := hf.GetMaxActiveFaults(); m != nil {
		out.MaxActiveFaults, out.HasMaxActiveFaults = m.GetValue(), true
	}
	for i, h := range hf.GetHeaders() {
		hm, err := translateHeaderMatcher(h)
		if err != nil {
			return nil, prefixed(fmt.Sprintf("headers[%d]", i), err)
		}
		out.Headers = append(out.Headers, hm)
	}
	return out, nil
}

// faultPercent reads a FractionalPercent. Unset, it is 0%: Envoy's and
// grpc-go's reading of a missing percentage.
func faultPercent(p *typev3.FractionalPercent) (FaultPercent, error) {
	out := FaultPercent{Numerator: p.GetNumerator()}
	switch p.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		out.Denominator = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		out.Denominator = 10_000
	case typev3.FractionalPercent_MILLION:
		out.Denominator = 1_000_000
	default:
		return out, ferr("denominator", "unknown %v", p.GetDenominator())
	}
	return out, nil
}

// faultOverrides reads the HTTPFault overrides among a
// typed_per_filter_config, bare or in a FilterConfig; a FilterConfig
// that is disabled without a config turns off the filter of its name
// (whichever filter that is: a name not a fault filter's is ignored at
// request time). where names the map's owner in unapplied paths,
// errWhere in errors. Other filters' entries are left to routeSession.
func faultOverrides(m map[string]*anypb.Any, where, errWhere string, out *RouteConfig) (map[string]*Fault, error) {
	var res map[string]*Fault
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a := m[k]
		errField := fmt.Sprintf("%s.typed_per_filter_config[%s]", errWhere, k)
		var f *Fault
		if a.MessageIs((*routev3.FilterConfig)(nil)) {
			fc := &routev3.FilterConfig{}
			if err := a.UnmarshalTo(fc); err != nil {
				return nil, ferr(errField, "%v", err)
			}
			if fc.GetDisabled() {
				f = &Fault{Disabled: true}
			}
			a = fc.GetConfig()
			errField += ".config"
		}
		if isFault(a) {
			c, unapplied, err := translateFault(a)
			if err != nil {
				return nil, prefixed(errField, err)
			}
			for _, u := range unapplied {
				out.Unapplied = append(out.Unapplied, fmt.Sprintf("%s.typed_per_filter_config[%s].%s", where, k, u))
			}
			if f != nil {
				c.Disabled = true
			}
			f = c
		}
		if f == nil {
			continue
		}
		if res == nil {
			res = map[string]*Fault{}
		}
		res[k] = f
	}
	return res, nil
}

// routeFaultOverrides sets the fault overrides of a route and of its
// weighted clusters. The route's own entries beat its virtual host's.
func routeFaultOverrides(r *routev3.Route, vh *routev3.VirtualHost, rt *Route, routeField, vhostField string, out *RouteConfig) error {
	vhf, err := faultOverrides(vh.GetTypedPerFilterConfig(), "virtual_hosts", vhostField, out)
	if err != nil {
		return err
	}
	rf, err := faultOverrides(r.GetTypedPerFilterConfig(), "virtual_hosts.routes", routeField, out)
	if err != nil {
		return err
	}
	if len(vhf)+len(rf) > 0 {
		rt.FaultOverrides = make(map[string]*Fault, len(vhf)+len(rf))
		for k, v := range vhf {
			rt.FaultOverrides[k] = v
		}
		for k, v := range rf {
			rt.FaultOverrides[k] = v
		}
	}
	// translateAction skips clusters of weight 0; k follows the ones kept.
	k := 0
	for i, c := range r.GetRoute().GetWeightedClusters().GetClusters() {
		if c.GetWeight().GetValue() == 0 {
			continue
		}
		const where = "virtual_hosts.routes.route.weighted_clusters.clusters"
		if tp := c.GetTypedPerFilterConfig(); len(tp) > 0 && k < len(rt.Action.WeightedClusters) {
			f, err := faultOverrides(tp, where, fmt.Sprintf("%s.route.weighted_clusters.clusters[%d]", routeField, i), out)
			if err != nil {
				return err
			}
			rt.Action.WeightedClusters[k].FaultOverrides = f
			for name, a := range tp {
				if _, ok := f[name]; !ok || isDisabledOnly(a) {
					out.Unapplied = append(out.Unapplied, fmt.Sprintf("%s.typed_per_filter_config[%s]", where, name))
				}
			}
		}
		k++
	}
	return nil
}

// isDisabledOnly reports whether a is a FilterConfig that disables its
// filter without a config of its own.
func isDisabledOnly(a *anypb.Any) bool {
	fc := &routev3.FilterConfig{}
	return a.MessageIs(fc) && a.UnmarshalTo(fc) == nil && fc.GetDisabled() && fc.GetConfig() == nil
}
