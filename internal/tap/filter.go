package tap

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
)

// Filter chooses the events a subscriber sees; the zero Filter admits
// every event. All set conditions must hold.
type Filter struct {
	// Service matches the event's authority as written ("orders:8080"),
	// its host without the port ("orders"), or its cluster.
	Service string
	// PathPrefix matches the start of the path (for gRPC, of the full
	// method: "/pkg.Service/").
	PathPrefix string
	// Status lists accepted statuses; any one admits the event.
	Status []StatusMatch
	// Direction is Outbound or Inbound; "" for both.
	Direction string
	// Protocol is HTTP or GRPC; "" for both.
	Protocol string
	// Sample, in (0, 1), is the share of matching events kept, drawn per
	// event; 0 or 1 keep all.
	Sample float64
}

// StatusMatch is one status condition: an HTTP status class (Class 5 for
// "5xx"), an exact HTTP status, or a gRPC code.
type StatusMatch struct {
	Class int
	Code  int
	GRPC  string // the code's name as grpc-go writes it ("Unavailable")
}

func (m StatusMatch) match(e *Event) bool {
	switch {
	case m.GRPC != "":
		return e.GRPCStatus == m.GRPC
	case m.Class != 0:
		return e.Status/100 == m.Class
	}
	return e.Status == m.Code
}

// Match reports whether f admits e (sampling aside).
func (f *Filter) Match(e *Event) bool {
	if f.Direction != "" && e.Direction != f.Direction {
		return false
	}
	if f.Protocol != "" && e.Protocol != f.Protocol {
		return false
	}
	if f.Service != "" && !strings.EqualFold(e.Authority, f.Service) && e.Cluster != f.Service &&
		!strings.EqualFold(hostOf(e.Authority), f.Service) {
		return false
	}
	if f.PathPrefix != "" && !strings.HasPrefix(e.Path, f.PathPrefix) {
		return false
	}
	if len(f.Status) > 0 {
		ok := false
		for _, s := range f.Status {
			if s.match(e) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func hostOf(authority string) string {
	if h, _, err := net.SplitHostPort(authority); err == nil {
		return h
	}
	return authority
}

// grpcCodes maps lower-case code names, with or without underscores
// ("unavailable", "deadline_exceeded", "deadlineexceeded"), to grpc-go's
// names.
var grpcCodes = func() map[string]string {
	m := map[string]string{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		name := c.String()
		m[strings.ToLower(name)] = name
	}
	m["cancelled"] = codes.Canceled.String()
	return m
}()

// ParseFilter reads a subscriber's filter from a /tap query:
//
//	service=orders  path=/items  status=5xx,503,unavailable
//	direction=outbound|inbound  protocol=http|grpc  sample=0.1
//
// status and service may repeat (status values are alternatives). An
// unknown parameter or a bad value is an error naming it.
func ParseFilter(q url.Values) (Filter, error) {
	var f Filter
	for k, vs := range q {
		for _, v := range vs {
			v = strings.TrimSpace(v)
			switch k {
			case "service", "authority":
				f.Service = v
			case "path":
				if !strings.HasPrefix(v, "/") {
					return Filter{}, fmt.Errorf("tap: path=%q: want a path prefix starting with /", v)
				}
				f.PathPrefix = v
			case "status":
				for s := range strings.SplitSeq(v, ",") {
					m, err := parseStatus(strings.TrimSpace(s))
					if err != nil {
						return Filter{}, err
					}
					f.Status = append(f.Status, m)
				}
			case "direction":
				if v != Outbound && v != Inbound {
					return Filter{}, fmt.Errorf("tap: direction=%q: want outbound or inbound", v)
				}
				f.Direction = v
			case "protocol":
				if v != HTTP && v != GRPC {
					return Filter{}, fmt.Errorf("tap: protocol=%q: want http or grpc", v)
				}
				f.Protocol = v
			case "sample":
				p, err := strconv.ParseFloat(v, 64)
				if err != nil || !(p > 0 && p <= 1) {
					return Filter{}, fmt.Errorf("tap: sample=%q: want a share of requests in (0, 1], such as 0.1", v)
				}
				f.Sample = p
			default:
				return Filter{}, fmt.Errorf("tap: unknown parameter %q (want service, path, status, direction, protocol or sample)", k)
			}
		}
	}
	return f, nil
}

func parseStatus(s string) (StatusMatch, error) {
	bad := fmt.Errorf("tap: status=%q: want an HTTP status (503), a class (5xx) or a gRPC code (unavailable)", s)
	switch {
	case len(s) == 3 && (s[1:] == "xx" || s[1:] == "XX"):
		c := int(s[0] - '0')
		if c < 1 || c > 5 {
			return StatusMatch{}, bad
		}
		return StatusMatch{Class: c}, nil
	case len(s) == 3 && s[0] >= '1' && s[0] <= '5':
		n, err := strconv.Atoi(s)
		if err != nil {
			return StatusMatch{}, bad
		}
		return StatusMatch{Code: n}, nil
	}
	if name, ok := grpcCodes[strings.ToLower(strings.ReplaceAll(s, "_", ""))]; ok {
		return StatusMatch{GRPC: name}, nil
	}
	return StatusMatch{}, bad
}
