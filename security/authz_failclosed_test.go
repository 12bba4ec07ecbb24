package security_test

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/security"
)

// TestWatchPolicyFileFailsClosed: a policy file that becomes empty,
// whitespace only, unreadable, missing or invalid never replaces the
// policies in force (an empty set would allow everything); each refusal
// is logged at Warn and reported by Status, and the next file that parses
// is applied.
func TestWatchPolicyFileFailsClosed(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "authz.yaml")
	denyAdmin := policyHeader + "metadata: {name: v1}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/admin]}}]}]\n"
	denyAPI := policyHeader + "metadata: {name: v2}\nspec:\n  action: DENY\n  rules: [{to: [{operation: {paths: [/api]}}]}]\n"
	writeAtomic(t, path, []byte(denyAdmin))
	logger, records := newRecordLogger()
	w, err := security.WatchPolicyFile(path, security.WithPollInterval(5*time.Millisecond), security.WithLogger(logger))
	if err != nil {
		t.Fatalf("WatchPolicyFile: %v", err)
	}
	defer w.Close()
	allowed := func(p string) bool {
		r := getReq(p, sleepID)
		return w.Evaluate(&r).Allow
	}
	if allowed("/admin") {
		t.Fatal("initial policy: /admin allowed, want denied")
	}

	for _, tc := range []struct {
		name    string
		change  func(t *testing.T)
		wantLog string
	}{
		{"truncated to zero bytes", func(t *testing.T) {
			if err := os.Truncate(path, 0); err != nil {
				t.Fatal(err)
			}
		}, "holds no policy documents"},
		{"invalid", func(t *testing.T) {
			writeAtomic(t, path, []byte(policyHeader+"spec: {action: NOPE}\n"))
		}, "spec.action"},
		{"only comments and separators", func(t *testing.T) {
			writeAtomic(t, path, []byte("# rendering failed\n---\n\n---\n"))
		}, "holds no policy documents"},
		{"missing", func(t *testing.T) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}, "reading policy file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := w.Status()
			tc.change(t)
			st := waitStatus(t, w, func(s security.PolicyStatus) bool { return s.Checks > before.Checks })
			if st.Err == nil || !strings.Contains(st.Err.Error(), tc.wantLog) {
				t.Errorf("Status().Err = %v, want an error containing %q", st.Err, tc.wantLog)
			}
			if st.Version != before.Version || !st.LoadedAt.Equal(before.LoadedAt) {
				t.Errorf("Status() version %d loaded at %v, want the last good one kept (version %d at %v)",
					st.Version, st.LoadedAt, before.Version, before.LoadedAt)
			}
			if allowed("/admin") {
				t.Error("/admin allowed, want the last good DENY policy kept")
			}
			rec := waitLevel(t, records, tc.wantLog)
			if rec.Level != slog.LevelWarn {
				t.Errorf("log level %v, want WARN", rec.Level)
			}
		})
	}

	// The same failure, seen again, is not logged again.
	writeAtomic(t, path, nil)
	st := waitStatus(t, w, func(s security.PolicyStatus) bool {
		return s.Err != nil && strings.Contains(s.Err.Error(), "no policy")
	})
	writeAtomic(t, path, []byte("\n"))
	waitStatus(t, w, func(s security.PolicyStatus) bool { return s.Checks > st.Checks })
	waitLevel(t, records, "no policy documents")
	writeAtomic(t, path, []byte(" \n\n"))
	waitStatus(t, w, func(s security.PolicyStatus) bool { return s.Checks > st.Checks+1 })
	select {
	case r := <-records:
		t.Errorf("the same failure logged twice: %s", recordText(r))
	default:
	}

	writeAtomic(t, path, []byte(denyAPI))
	st = waitStatus(t, w, func(s security.PolicyStatus) bool { return s.Err == nil })
	if st.Version != 2 || allowed("/admin") == false && allowed("/api") {
		t.Errorf("after a valid file: version %d, /admin allowed %v, /api allowed %v; want 2, true, false",
			st.Version, allowed("/admin"), allowed("/api"))
	}
	if !allowed("/admin") || allowed("/api") {
		t.Errorf("after a valid file: /admin allowed %v, /api allowed %v; want true, false", allowed("/admin"), allowed("/api"))
	}
	if st.Path != path {
		t.Errorf("Status().Path = %q, want %q", st.Path, path)
	}

	// An empty file is refused at start too: there is nothing to keep.
	empty := filepath.Join(dir, "empty.yaml")
	writeAtomic(t, empty, nil)
	if w2, err := security.WatchPolicyFile(empty); err == nil {
		w2.Close()
		t.Error("WatchPolicyFile(empty file) = nil error, want an error")
	} else if !strings.Contains(err.Error(), empty) {
		t.Errorf("WatchPolicyFile(empty file) = %v, want the file named", err)
	}
}

// waitStatus waits, for at most 10s, until ok holds for w's status.
func waitStatus(t *testing.T, w *security.PolicyWatcher, ok func(security.PolicyStatus) bool) security.PolicyStatus {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for i := 0; i < 10000; i++ {
		if s := w.Status(); ok(s) {
			return s
		}
		select {
		case <-w.Updated():
		case <-time.After(50 * time.Millisecond):
		case <-timeout:
			t.Fatalf("status %+v: condition not met within 10s", w.Status())
		}
	}
	t.Fatalf("status %+v: condition not met", w.Status())
	return security.PolicyStatus{}
}

// waitLevel is waitRecord returning the record.
func waitLevel(t *testing.T, ch chan slog.Record, substr string) slog.Record {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for i := 0; i < 1000; i++ {
		select {
		case r := <-ch:
			if strings.Contains(recordText(r), substr) {
				return r
			}
		case <-timeout:
			t.Fatalf("no log record containing %q within 5s", substr)
		}
	}
	t.Fatalf("no log record containing %q", substr)
	return slog.Record{}
}

// TestPolicyParseErrorNamesField: an unknown field names the file, the
// line, the field written and the field meant.
func TestPolicyParseErrorNamesField(t *testing.T) {
	rule := func(body string) string {
		return policyHeader + "metadata: {name: p}\nspec:\n  rules:\n" + body
	}
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"principal", rule("  - from:\n    - source:\n        principal: [cluster.local/ns/a/sa/b]\n"),
			[]string{"line 8:", `unknown field "principal"`, `did you mean "principals"?`, "rules[].from[].source"}},
		{"namespace", rule("  - from:\n    - source:\n        namespace: [a]\n"),
			[]string{"line 8:", `unknown field "namespace"`, `did you mean "namespaces"?`}},
		{"path", rule("  - to:\n    - operation:\n        path: [/x]\n"),
			[]string{"line 8:", `unknown field "path"`, `did you mean "paths"?`, "rules[].to[].operation"}},
		{"metod", rule("  - to:\n    - operation:\n        metods: [GET]\n"),
			[]string{"line 8:", `unknown field "metods"`, `did you mean "methods"?`}},
		{"sorce", rule("  - from:\n    - sorce: {principals: [a]}\n"),
			[]string{"line 7:", `unknown field "sorce"`, `did you mean "source"?`, "spec.rules[].from[]"}},
		{"rule", policyHeader + "spec:\n  rule: []\n",
			[]string{"line 4:", `unknown field "rule"`, `did you mean "rules"?`, "in spec"}},
		{"actoin", policyHeader + "spec:\n  actoin: DENY\n",
			[]string{"line 4:", `unknown field "actoin"`, `did you mean "action"?`}},
		{"second document", rule("  - to: [{operation: {paths: [/a]}}]\n") + "---\n" + rule("  - when:\n    - kye: request.headers[x]\n      values: [a]\n"),
			[]string{"document 2", "line 14:", `unknown field "kye"`, `did you mean "key"?`}},
		{"far from anything", rule("  - to:\n    - operation:\n        qqqqqqqq: [/x]\n"),
			[]string{"line 8:", `unknown field "qqqqqqqq"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "authz.yaml")
			writeAtomic(t, path, []byte(tc.doc))
			w, err := security.WatchPolicyFile(path)
			if err == nil {
				w.Close()
				t.Fatal("WatchPolicyFile = nil error, want one")
			}
			got := err.Error()
			for _, want := range append(tc.want, path) {
				if !strings.Contains(got, want) {
					t.Errorf("error %q\ndoes not contain %q", got, want)
				}
			}
			if strings.Contains(got, "security.sourceDoc") || strings.Contains(got, "not found in type") {
				t.Errorf("error %q names Go types", got)
			}
			if _, perr := security.ParseAuthorizationPolicies([]byte(tc.doc)); perr == nil || !strings.HasPrefix(perr.Error(), "security: ") {
				t.Errorf("ParseAuthorizationPolicies = %v, want an error prefixed security:", perr)
			}
		})
	}
}
