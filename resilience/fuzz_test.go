package resilience_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/weftmesh/weft/resilience"
)

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range []string{"0", "120", "-1", "Fri, 02 Jan 2026 03:05:05 GMT", "Friday, 02-Jan-26 03:05:05 GMT", "Fri Jan  2 03:05:05 2026", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := resilience.ParseRetryAfter(v, now)
		if !ok {
			if d != 0 {
				t.Errorf("ParseRetryAfter(%q): got %v with ok false, want 0", v, d)
			}
			return
		}
		if d < 0 || d > 24*time.Hour && !isDate(v) {
			t.Errorf("ParseRetryAfter(%q): got %v, want within [0, 24h] for seconds", v, d)
		}
		if n, err := strconv.ParseUint(v, 10, 32); err == nil && n <= 86400 && d != time.Duration(n)*time.Second {
			t.Errorf("ParseRetryAfter(%q): got %v, want %ds", v, d, n)
		}
	})
}

func isDate(v string) bool {
	_, err := http.ParseTime(v)
	return err == nil
}
