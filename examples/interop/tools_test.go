package interop

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tool is a program built from the Go module proxy at a pinned version,
// from a scratch module whose tools.go imports its commands, since
// `go install` refuses modules with replace directives.
type tool struct {
	name    string   // cache directory prefix, e.g. "spire"
	module  string   // e.g. github.com/spiffe/spire
	version string   // an exact version: @latest is refused for these
	cmds    []string // package paths of the commands
	gomod   string   // extra go.mod lines, such as the module's own replaces
	env     []string // extra environment for go mod tidy and go build
}

// buildTimeout bounds one build step; the full build of SPIRE or Jaeger
// takes about five minutes on two idle cores.
const buildTimeout = 25 * time.Minute

// binaries returns the paths of the tool's commands, building them first
// into <user cache>/weft-interop/src/<name>-<version>/bin when they are
// not there yet. When the build is impossible (no network, no C compiler,
// a refused dependency) or cannot finish within the test's -timeout, the
// test is skipped with the reason.
func (tl tool) binaries(t *testing.T) map[string]string {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Skipf("%s %s: no cache directory to build into: %v", tl.module, tl.version, err)
	}
	dir := filepath.Join(cache, "weft-interop", "src", tl.name+"-"+tl.version)
	bins := map[string]string{}
	missing := false
	for _, c := range tl.cmds {
		bins[path.Base(c)] = filepath.Join(dir, "bin", path.Base(c))
		if _, err := os.Stat(bins[path.Base(c)]); err != nil {
			missing = true
		}
	}
	if !missing {
		return bins
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("%s %s is not built and no go command is on PATH to build it", tl.module, tl.version)
	}
	timeout := buildTimeout
	if d, ok := t.Deadline(); ok {
		if left := time.Until(d) - time.Minute; left < timeout {
			timeout = left
		}
		if timeout < 10*time.Minute {
			t.Skipf("%s %s is not built yet and the build takes minutes: run with -timeout 60m (it is cached in %s afterwards)",
				tl.module, tl.version, dir)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Skipf("%s %s: %v", tl.module, tl.version, err)
	}
	var imports strings.Builder
	for _, c := range tl.cmds {
		fmt.Fprintf(&imports, "\t_ %q\n", c)
	}
	files := map[string]string{
		"go.mod":   "module weftinterop/" + tl.name + "\n\ngo 1.26.0\n" + tl.gomod,
		"tools.go": "//go:build tools\n\npackage tools\n\nimport (\n" + imports.String() + ")\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Skipf("%s %s: %v", tl.module, tl.version, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	t.Logf("building %s %s in %s (minutes, once)", tl.module, tl.version, dir)
	steps := [][]string{
		{"go", "get", tl.module + "@" + tl.version},
		{"go", "mod", "tidy"},
		append([]string{"go", "build", "-o", "bin" + string(filepath.Separator)}, tl.cmds...),
	}
	for _, step := range steps {
		cmd := exec.CommandContext(ctx, step[0], step[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), tl.env...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Skipf("%s %s: cannot build (%s: %v); the missing piece is in its last lines:\n%s",
				tl.module, tl.version, strings.Join(step, " "), err, lastLines(out.String(), 15))
		}
	}
	t.Logf("built %s %s in %v", tl.module, tl.version, time.Since(start).Round(time.Second))
	return bins
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// process runs a long-lived program until the test ends, its output kept
// in a file that is printed when the test fails.
func process(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(t.TempDir(), filepath.Base(name)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("%s output:\n%s", filepath.Base(name), lastLines(string(out), 40))
		}
	})
	return cmd
}

// run runs a short command and returns its output, failing the test on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	return string(out)
}
