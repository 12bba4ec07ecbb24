package suggest_test

import (
	"testing"

	"github.com/weftmesh/weft/internal/suggest"
)

func TestClosest(t *testing.T) {
	known := []string{"principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks", "notIpBlocks"}
	for _, tc := range []struct {
		word, want string
		ok         bool
	}{
		{"principal", "principals", true},
		{"Principals", "principals", true},
		{"prinicpals", "principals", true}, // a swap
		{"namespace", "namespaces", true},
		{"ipblocks", "ipBlocks", true},
		{"notIPBlocks", "notIpBlocks", true},
		{"x", "", false},
		{"completelyDifferent", "", false},
		{"", "", false},
	} {
		t.Run(tc.word, func(t *testing.T) {
			got, ok := suggest.Closest(tc.word, known)
			if got != tc.want || ok != tc.ok {
				t.Errorf("Closest(%q) = %q, %v; want %q, %v", tc.word, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestUnknown(t *testing.T) {
	known := []string{"timeout", "port", "name"}
	for _, tc := range []struct {
		word      string
		listKnown bool
		want      string
	}{
		{"timout", true, `unknown key "timout" (did you mean "timeout"? known: name, port, timeout)`},
		{"timout", false, `unknown key "timout" (did you mean "timeout"?)`},
		{"zzzzzzzz", true, `unknown key "zzzzzzzz" (known: name, port, timeout)`},
		{"zzzzzzzz", false, `unknown key "zzzzzzzz"`},
	} {
		t.Run(tc.word, func(t *testing.T) {
			if got := suggest.Unknown("key", tc.word, known, tc.listKnown); got != tc.want {
				t.Errorf("Unknown(%q, %v) =\n %s\nwant\n %s", tc.word, tc.listKnown, got, tc.want)
			}
		})
	}
}
