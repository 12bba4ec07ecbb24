// Package browsertest runs Debian's chromium headless against a page
// served in a test and returns the DOM its script built, keeping a
// screenshot: the admin page is JavaScript rendering JSON, and only a
// browser shows that it works. Tests skip where chromium is missing.
package browsertest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Chromium returns the browser to run, or skips the test naming what is
// missing (and under -short).
func Chromium(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("-short: skipping the admin page's browser test")
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	tb.Skip("chromium is not installed (no chromium or chromium-browser on PATH; on Debian: apt-get install -y chromium): skipping the admin page's browser test")
	return ""
}

// Run runs headless chromium with args after the common flags and
// returns its standard output. Its profile and home are temporary
// directories, so it reads and leaves nothing outside them.
func Run(tb testing.TB, args ...string) string {
	tb.Helper()
	bin := Chromium(tb)
	home := tb.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + filepath.Join(home, "profile"),
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// Chromium's helper processes may hold the pipes after it exits.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\nstderr:\n%s", bin, strings.Join(args, " "), err, Tail(stderr.String(), 3000))
	}
	return stdout.String()
}

// Tail is the last n bytes of s, marked as cut when it is.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Render loads url in a window of size ("1280,900"), lets its script run
// for 5 s of virtual time and returns the DOM it built. It saves a
// screenshot as name into $ARTIFACTS_DIR when set (for CI to keep), else
// into the test's temporary directory, and logs the path.
func Render(tb testing.TB, url, name, size string) string {
	tb.Helper()
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = tb.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, name)
	dom := Run(tb, "--virtual-time-budget=5000", "--dump-dom",
		"--hide-scrollbars", "--window-size="+size, "--screenshot="+path, url)
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		tb.Errorf("no screenshot at %s: %v", path, err)
	} else {
		tb.Logf("screenshot of the admin page: %s", path)
	}
	return dom
}
