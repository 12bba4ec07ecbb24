package resolver_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/resolver"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseEndpoints(t *testing.T) {
	ep := func(addrs ...string) []resolver.Endpoint {
		var out []resolver.Endpoint
		for _, a := range addrs {
			out = append(out, resolver.Endpoint{Addr: a})
		}
		return out
	}
	good := []struct {
		in   string
		want map[string][]resolver.Endpoint
	}{
		{"orders=10.0.0.1:8080", map[string][]resolver.Endpoint{"orders": ep("10.0.0.1:8080")}},
		{"orders=10.0.0.1:8080,10.0.0.2:8080;users=127.0.0.1:9000", map[string][]resolver.Endpoint{
			"orders": ep("10.0.0.1:8080", "10.0.0.2:8080"), "users": ep("127.0.0.1:9000")}},
		{" orders = a.svc:80 , b.svc:81 ; ", map[string][]resolver.Endpoint{"orders": ep("a.svc:80", "b.svc:81")}},
		{"v6=[::1]:9000,[2001:db8::1]:443", map[string][]resolver.Endpoint{"v6": ep("[::1]:9000", "[2001:db8::1]:443")}},
		{"orders:8080=127.0.0.1:1", map[string][]resolver.Endpoint{"orders:8080": ep("127.0.0.1:1")}},
		{"orders=10.0.0.1:80@us/us-b, [::1]:81@us/us-c/rack1,10.0.0.3:80", map[string][]resolver.Endpoint{"orders": {
			{Addr: "10.0.0.1:80", Locality: resolver.Locality{Region: "us", Zone: "us-b"}},
			{Addr: "[::1]:81", Locality: resolver.Locality{Region: "us", Zone: "us-c", SubZone: "rack1"}},
			{Addr: "10.0.0.3:80"}}}},
	}
	for _, tt := range good {
		got, err := resolver.ParseEndpoints(tt.in)
		if err != nil {
			t.Errorf("ParseEndpoints(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseEndpoints(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}

	bad := []struct{ in, culprit string }{
		{"", "no services"},
		{"  ;  ", "no services"},
		{"orders", `"orders"`},
		{"orders=", `"orders"`},
		{"=10.0.0.1:80", "empty service name"},
		{"orders=10.0.0.1", `"10.0.0.1"`},
		{"orders=10.0.0.1:0", `"10.0.0.1:0"`},
		{"orders=10.0.0.1:99999", `"10.0.0.1:99999"`},
		{"orders=10.0.0.1:http", `"10.0.0.1:http"`},
		{"orders=bad host:80", `"bad host:80"`},
		{"orders=10.0.0.1:80;orders=10.0.0.2:80", `"orders" is listed twice`},
		{"or ders=10.0.0.1:80", `"or ders"`},
		{"orders=10.0.0.1:80@", `"10.0.0.1:80@"`},
		{"orders=10.0.0.1:80@a//c", `"10.0.0.1:80@a//c"`},
		{"orders=10.0.0.1:80@a/b/c/d", "region[/zone[/subzone]]"},
		{"orders=10.0.0.1@a/b", `"10.0.0.1@a/b"`},
	}
	for _, tt := range bad {
		_, err := resolver.ParseEndpoints(tt.in)
		if err == nil {
			t.Errorf("ParseEndpoints(%q) succeeded, want an error", tt.in)
			continue
		}
		if !strings.Contains(err.Error(), tt.culprit) {
			t.Errorf("ParseEndpoints(%q) error %q does not name %s", tt.in, err, tt.culprit)
		}
	}
}

// FuzzParseEndpoints checks that any WEFT_ENDPOINTS value either parses
// into well-formed endpoints or is an error, never a panic.
func FuzzParseEndpoints(f *testing.F) {
	for _, s := range []string{"orders=10.0.0.1:8080", "a=[::1]:1;b=x:2,y:3", ";;=", "a=b:c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := resolver.ParseEndpoints(s)
		if err != nil {
			return
		}
		if len(got) == 0 {
			t.Fatalf("ParseEndpoints(%q) returned no services and no error", s)
		}
		for name, eps := range got {
			if name == "" || len(eps) == 0 {
				t.Fatalf("ParseEndpoints(%q): service %q with %d endpoints", s, name, len(eps))
			}
			for _, e := range eps {
				if _, port := resolver.SplitHostPort(e.Addr); port == "" {
					t.Fatalf("ParseEndpoints(%q): endpoint %q without a port", s, e.Addr)
				}
			}
		}
	})
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct{ in, host, port string }{
		{"orders", "orders", ""},
		{"orders:8080", "orders", "8080"},
		{"[::1]:80", "::1", "80"},
		{"[::1]", "::1", ""},
		{"::1", "::1", ""},
		{"10.0.0.1:80", "10.0.0.1", "80"},
	}
	for _, tt := range tests {
		h, p := resolver.SplitHostPort(tt.in)
		if h != tt.host || p != tt.port {
			t.Errorf("SplitHostPort(%q) = %q, %q; want %q, %q", tt.in, h, p, tt.host, tt.port)
		}
	}
}

// recorder is a Watcher that keeps every state it is given.
type recorder struct{ states chan resolver.State }

func newRecorder() *recorder                  { return &recorder{states: make(chan resolver.State, 64)} }
func (r *recorder) OnUpdate(s resolver.State) { r.states <- s }

func addrs(s resolver.State) []string {
	var out []string
	for _, e := range s.Endpoints {
		out = append(out, e.Addr)
	}
	return out
}

func TestStaticWatchAndUpdate(t *testing.T) {
	s := resolver.NewStatic(map[string][]resolver.Endpoint{"orders": {{Addr: "10.0.0.1:80"}}})
	defer s.Close()
	r := newRecorder()
	cancel := s.Watch("orders", r)
	if got := addrs(<-r.states); !reflect.DeepEqual(got, []string{"10.0.0.1:80"}) {
		t.Fatalf("first state = %v", got)
	}
	s.Update("orders", []resolver.Endpoint{{Addr: "10.0.0.2:80"}, {Addr: "10.0.0.3:80"}})
	if got := addrs(<-r.states); !reflect.DeepEqual(got, []string{"10.0.0.2:80", "10.0.0.3:80"}) {
		t.Fatalf("after Update: %v", got)
	}
	cancel()
	s.Update("orders", nil)
	select {
	case st := <-r.states:
		t.Fatalf("watcher called after cancel with %v", st)
	default:
	}
}

func TestStaticUnknownService(t *testing.T) {
	s := resolver.NewStatic(nil)
	defer s.Close()
	r := newRecorder()
	defer s.Watch("nope", r)()
	st := <-r.states
	if !errors.Is(st.Err, resolver.ErrUnknownService) || !strings.Contains(st.Err.Error(), `"nope"`) {
		t.Errorf("unknown service: err = %v, want ErrUnknownService naming it", st.Err)
	}
}
