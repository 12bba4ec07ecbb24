package admin

import (
	"net"
	"net/netip"
	"testing"
)

// The admin listener's own address counts as an allowed Host: the address
// it is bound to, or every interface address when bound to all of them
// (a kubelet probes the pod IP).
func TestAdminHostsOwnAddress(t *testing.T) {
	bound := newHosts("10.1.2.3:9901", &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 9901}, nil)
	for host, want := range map[string]bool{
		"10.1.2.3:9901": true, "10.1.2.3": true, "10.1.2.4:9901": false, "[::ffff:10.1.2.3]:9901": true,
		"localhost": true, "127.0.0.1": true, "[::1]": true, "evil.example": false,
	} {
		if got := bound.allowed(host); got != want {
			t.Errorf("bound to 10.1.2.3: allowed(%q) = %v, want %v", host, got, want)
		}
	}

	all := newHosts(":9901", &net.TCPAddr{IP: net.IPv6unspecified, Port: 9901}, []string{"ops.example"})
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		host := net.JoinHostPort(p.Addr().String(), "9901")
		if !all.allowed(host) {
			t.Errorf("bound to every interface: allowed(%q), an interface address, = false", host)
		}
	}
	for host, want := range map[string]bool{"203.0.113.9:9901": false, "ops.example:1": true, "OPS.EXAMPLE.": true, "ops.example.evil": false} {
		if got := all.allowed(host); got != want {
			t.Errorf("bound to every interface: allowed(%q) = %v, want %v", host, got, want)
		}
	}
}
