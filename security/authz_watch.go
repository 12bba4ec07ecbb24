package security

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/fileutil"
	"github.com/weftmesh/weft/internal/jwt"
)

// PolicyWatcher keeps a [PolicySet] in step with a policy file
// (WEFT_AUTHZ_POLICY). It stats the file every poll interval and reparses
// it when its modification time or size changes. It fails closed: a file
// that is missing, unreadable, empty (no policy documents) or invalid
// never replaces the policies in force; the watcher logs why at Warn, once
// for each distinct failure, and [PolicyWatcher.Status] reports it. A
// truncate-then-write update or a failed template leaves a file empty for
// a moment, and an empty set of policies would allow every request.
//
// A PolicyWatcher is safe for concurrent use; Close is idempotent.
type PolicyWatcher struct {
	path     string
	logger   *slog.Logger
	workload Workload
	current  atomic.Pointer[PolicySet]
	updated  chan struct{}
	// keys caches the remote key sets of RequestAuthentications; authn
	// validates against the policies in force.
	keys  *jwt.Registry
	authn atomic.Pointer[watchedAuthn]

	mu     sync.Mutex
	status PolicyStatus

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// PolicyStatus is what a [PolicyWatcher] knows of its file, for an admin
// page or a readiness check: which load is in force and why the file's
// latest content, if it was refused, was refused.
type PolicyStatus struct {
	// Path is the policy file.
	Path string
	// Version counts the loads that replaced the policies in force: 1
	// after the first.
	Version int
	// LoadedAt is when the policies in force were loaded.
	LoadedAt time.Time
	// Checks counts the times the watcher read the file because it had
	// changed, whether or not the content was loaded.
	Checks int
	// Err is why the file's latest content was refused, and ErrAt when;
	// nil once a later content loads.
	Err   error
	ErrAt time.Time
}

// errEmptyPolicyFile is the reason an empty policy file is refused.
var errEmptyPolicyFile = errors.New("holds no policy documents; an empty set would allow every request, so it is refused (write an explicit ALLOW policy to allow all)")

// WatchPolicyFile parses the policies in path and watches it for changes.
// It fails if the first read or parse fails, or if the file holds no
// policy. Options: [WithPollInterval], [WithLogger], [WithWorkload]. The
// caller must Close the watcher.
func WatchPolicyFile(path string, opts ...Option) (*PolicyWatcher, error) {
	o := newOptions(opts)
	w := &PolicyWatcher{
		path:     path,
		logger:   o.logger,
		workload: o.workload,
		updated:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		keys:     jwt.NewRegistry(nil, o.logger),
	}
	stamp := statFile(path)
	set, err := loadPolicyFile(path)
	if err != nil {
		w.keys.Close()
		return nil, err
	}
	set = set.For(w.workload)
	a, err := w.newWatchedAuthn(set)
	if err != nil {
		w.keys.Close()
		return nil, err
	}
	w.current.Store(set)
	w.authn.Store(a)
	w.status = PolicyStatus{Path: path, Version: 1, LoadedAt: time.Now()}
	go w.watch(o.pollInterval, stamp)
	return w, nil
}

func loadPolicyFile(path string) (*PolicySet, error) {
	data, err := fileutil.ReadFile(context.Background(), path, fileutil.MaxConfigFile)
	if err != nil {
		return nil, fmt.Errorf("security: reading policy file: %w", err)
	}
	set, err := parseAuthorizationPolicies(data, path)
	if err != nil {
		return nil, err
	}
	if set.empty() {
		return nil, fmt.Errorf("security: policy file %s %w", path, errEmptyPolicyFile)
	}
	return set, nil
}

func statFile(name string) fileStamp {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
}

func (w *PolicyWatcher) watch(interval time.Duration, last fileStamp) {
	defer close(w.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr []byte // the last failure logged, to log each one once
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		cur := statFile(w.path)
		if cur == last {
			continue
		}
		last = cur
		set, err := loadPolicyFile(w.path)
		var a *watchedAuthn
		if err == nil {
			set = set.For(w.workload)
			a, err = w.newWatchedAuthn(set)
		}
		now := time.Now()
		// Log before the status changes, so that a reader of Status
		// that sees this check sees its log line too.
		if err != nil {
			if msg := []byte(err.Error()); !bytes.Equal(msg, lastErr) {
				lastErr = msg
				w.logger.Warn("security: keeping the last good authorization policies", "file", w.path, "err", err)
			}
		} else {
			lastErr = nil
		}
		w.mu.Lock()
		w.status.Checks++
		if err != nil {
			w.status.Err, w.status.ErrAt = err, now
		} else {
			// The new validator holds its key sets before the old one
			// lets go of them: a provider kept keeps its cached keys.
			w.current.Store(set)
			if old := w.authn.Swap(a); old != nil && old.auth != nil {
				old.auth.Close()
			}
			w.status.Version++
			w.status.LoadedAt, w.status.Err, w.status.ErrAt = now, nil, time.Time{}
		}
		w.mu.Unlock()
		select {
		case w.updated <- struct{}{}:
		default:
		}
	}
}

// Evaluate decides r with the policies currently in force.
func (w *PolicyWatcher) Evaluate(r *Request) Decision { return w.current.Load().Evaluate(r) }

// Policies returns the policies currently in force.
func (w *PolicyWatcher) Policies() *PolicySet { return w.current.Load() }

// Status reports the load in force and the latest refusal, if any.
func (w *PolicyWatcher) Status() PolicyStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// Updated returns a channel that receives a value after each time the
// watcher reads the changed file, whether it loaded it or kept the last
// good policies (without blocking the watcher; values may coalesce).
// [PolicyWatcher.Status] tells which.
func (w *PolicyWatcher) Updated() <-chan struct{} { return w.updated }

// Close stops watching and fetching key sets; the last policies stay in
// force for Evaluate, and their key sets as last fetched. It is
// idempotent.
func (w *PolicyWatcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
		w.keys.Close()
	})
	return nil
}
