package admin

import (
	"bufio"
	"bytes"
	"fmt"
	"html"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"time"
)

// The admin endpoint serves the profiles net/http/pprof serves, at the same
// paths and in the same formats (go tool pprof reads them), built on
// runtime/pprof directly. Importing net/http/pprof would register its
// handlers on http.DefaultServeMux for every program that imports Weft, and
// a program serving the default mux on its public port would then expose
// its profiles there, whatever WEFT_ADMIN_PPROF says.

// maxProfileSeconds bounds ?seconds= for CPU profiles and traces: a
// request must not keep profiling on for hours.
const maxProfileSeconds = 600

func mountPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/{$}", pprofIndex)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprofCmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprofCPU)
	mux.HandleFunc("GET /debug/pprof/trace", pprofTrace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprofSymbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprofSymbol)
	mux.HandleFunc("GET /debug/pprof/{name}", pprofNamed)
}

func pprofIndex(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<title>/debug/pprof/</title>\n<h1>/debug/pprof/</h1>\n<table>\n<tr><th>count</th><th>profile</th></tr>\n")
	for _, p := range pprof.Profiles() {
		name := html.EscapeString(p.Name())
		fmt.Fprintf(&b, "<tr><td>%d</td><td><a href=\"%s?debug=1\">%s</a></td></tr>\n", p.Count(), name, name)
	}
	b.WriteString("</table>\n<p><a href=\"profile?seconds=30\">profile</a> (30 s of CPU), " +
		"<a href=\"trace?seconds=1\">trace</a> (1 s of execution trace), <a href=\"cmdline\">cmdline</a>, " +
		"<a href=\"goroutine?debug=2\">all goroutine stacks</a></p>\n")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.WriteString(w, b.String())
}

func pprofCmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	io.WriteString(w, strings.Join(os.Args, "\x00"))
}

// pprofNamed serves one runtime/pprof profile: gzipped protobuf, or text
// with ?debug=1 (counts) or 2 (goroutine stacks as in a crash).
func pprofNamed(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	p := pprof.Lookup(name)
	if p == nil {
		http.Error(w, "unknown profile "+strconv.Quote(name), http.StatusNotFound)
		return
	}
	if r.FormValue("seconds") != "" {
		// net/http/pprof's delta profiles are not offered: two profiles
		// and go tool pprof -diff_base give the same answer.
		http.Error(w, "seconds= is not supported here; take two profiles and compare them with go tool pprof -diff_base", http.StatusBadRequest)
		return
	}
	debug, _ := strconv.Atoi(r.FormValue("debug"))
	if name == "heap" && r.FormValue("gc") != "" {
		runtime.GC()
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if debug != 0 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
	}
	p.WriteTo(w, debug)
}

// profileSeconds reads ?seconds=, def when absent; ok is false (and the
// error written) when it is not a whole number in 1..maxProfileSeconds.
func profileSeconds(w http.ResponseWriter, r *http.Request, def int) (time.Duration, bool) {
	v := r.FormValue("seconds")
	if v == "" {
		return time.Duration(def) * time.Second, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxProfileSeconds {
		http.Error(w, fmt.Sprintf("seconds=%q: want a whole number from 1 to %d", v, maxProfileSeconds), http.StatusBadRequest)
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// sleepRequest waits d, or less when the client goes away or the admin
// endpoint closes.
func sleepRequest(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

func pprofCPU(w http.ResponseWriter, r *http.Request) {
	d, ok := profileSeconds(w, r, 30)
	if !ok {
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="profile"`)
	if err := pprof.StartCPUProfile(w); err != nil {
		// Nothing is written yet: a profile is already being taken.
		w.Header().Del("Content-Disposition")
		http.Error(w, "could not start the CPU profile: "+err.Error(), http.StatusInternalServerError)
		return
	}
	sleepRequest(r, d)
	pprof.StopCPUProfile()
}

func pprofTrace(w http.ResponseWriter, r *http.Request) {
	d, ok := profileSeconds(w, r, 1)
	if !ok {
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="trace"`)
	if err := trace.Start(w); err != nil {
		w.Header().Del("Content-Disposition")
		http.Error(w, "could not start the trace: "+err.Error(), http.StatusInternalServerError)
		return
	}
	sleepRequest(r, d)
	trace.Stop()
}

// pprofSymbol maps program counters to function names, for pprof tools
// that symbolize remotely: "0x1234+0x5678" in the query or the POST body.
func pprofSymbol(w http.ResponseWriter, r *http.Request) {
	var in io.Reader = strings.NewReader(r.URL.RawQuery)
	if r.Method == http.MethodPost {
		in = http.MaxBytesReader(w, r.Body, 1<<20)
	}
	var out bytes.Buffer
	out.WriteString("num_symbols: 1\n")
	b := bufio.NewReader(in)
	for {
		word, err := b.ReadSlice('+')
		if err == nil {
			word = word[:len(word)-1]
		}
		if pc, _ := strconv.ParseUint(string(word), 0, 64); pc != 0 {
			if f := runtime.FuncForPC(uintptr(pc)); f != nil {
				fmt.Fprintf(&out, "%#x %s\n", pc, f.Name())
			}
		}
		if err != nil {
			if err != io.EOF {
				fmt.Fprintf(&out, "reading request: %v\n", err)
			}
			break
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(out.Bytes())
}
