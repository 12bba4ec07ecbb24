package admin

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// hosts is the set of Host values the admin listener answers. A page in
// a browser can reach a loopback listener through DNS rebinding (its own
// name made to resolve to 127.0.0.1), but its requests then carry its own
// name in Host: answering only loopback names and addresses, the
// listener's own address and the hosts an operator names
// (WEFT_ADMIN_HOSTS) keeps such a page from reading the admin endpoint.
type hosts struct {
	names map[string]bool // lower case, no port
	ips   []netip.Addr    // the listener's own addresses
}

func newHosts(configured string, bound net.Addr, extra []string) *hosts {
	h := &hosts{names: map[string]bool{"localhost": true}}
	if host, _, err := net.SplitHostPort(configured); err == nil && host != "" {
		h.names[normalizeHost(host)] = true
	}
	for _, e := range extra {
		h.names[normalizeHost(e)] = true
	}
	if ta, ok := bound.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		ip = ip.Unmap()
		if ip.IsUnspecified() {
			// Bound to every interface: its own addresses are theirs.
			addrs, _ := net.InterfaceAddrs()
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil {
					h.ips = append(h.ips, p.Addr().Unmap())
				}
			}
		} else if ip.IsValid() {
			h.ips = append(h.ips, ip)
		}
	}
	return h
}

// normalizeHost lowercases host and drops a port, IPv6 brackets, a
// zone-less trailing dot.
func normalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(host, "]"), "["), ".")
	return strings.ToLower(host)
}

func (h *hosts) allowed(hostHeader string) bool {
	if hostHeader == "" {
		return true // HTTP/1.0 without Host: no browser sends that
	}
	host := normalizeHost(hostHeader)
	if h.names[host] {
		return true
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	return ip.IsLoopback() || slices.Contains(h.ips, ip)
}

// check answers 421 to a request naming a Host not allowed, before any
// handler, those mounted with Handle included, sees it.
func (h *hosts) check(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.allowed(r.Host) {
			http.Error(w, fmt.Sprintf("admin: Host %q is not allowed here: the admin listener answers localhost, loopback addresses, "+
				"its own address and the hosts listed in WEFT_ADMIN_HOSTS", r.Host), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// CheckHost refuses an entry of WEFT_ADMIN_HOSTS or WithHosts that is no
// host name or address (an optional port is allowed and ignored).
func CheckHost(e string) error {
	host := e
	if h, port, err := net.SplitHostPort(e); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return fmt.Errorf("%q is not a host name or address (with an optional port)", e)
		}
		host = h
	}
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return nil
	}
	if host == "" || strings.ContainsAny(host, "/ \t*@?#[]") {
		return fmt.Errorf("%q is not a host name or address", e)
	}
	return nil
}

// ParseHosts reads a comma-separated host list as WEFT_ADMIN_HOSTS
// writes it: "admin.internal,10.0.0.7".
func ParseHosts(v string) ([]string, error) {
	var out []string
	for e := range strings.SplitSeq(v, ",") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		if err := CheckHost(e); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, errors.New("no hosts (want a comma-separated list such as admin.internal,10.0.0.7)")
	}
	return out, nil
}
