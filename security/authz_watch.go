package security

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/internal/fileutil"
)

// PolicyWatcher keeps a [PolicySet] in step with a policy file
// (WEFT_AUTHZ_POLICY). It stats the file every poll interval and reparses
// it when its modification time or size changes; a file that fails to read
// or parse is logged and the last good policies stay in force.
//
// A PolicyWatcher is safe for concurrent use; Close is idempotent.
type PolicyWatcher struct {
	path     string
	logger   *slog.Logger
	workload Workload
	current  atomic.Pointer[PolicySet]
	updated  chan struct{}

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// WatchPolicyFile parses the policies in path and watches it for changes.
// It fails if the first read or parse fails. Options: [WithPollInterval],
// [WithLogger], [WithWorkload]. The caller must Close the watcher.
func WatchPolicyFile(path string, opts ...Option) (*PolicyWatcher, error) {
	o := newOptions(opts)
	w := &PolicyWatcher{
		path:     path,
		logger:   o.logger,
		workload: o.workload,
		updated:  make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	stamp := statFile(path)
	set, err := loadPolicyFile(path)
	if err != nil {
		return nil, err
	}
	w.current.Store(set.For(w.workload))
	go w.watch(o.pollInterval, stamp)
	return w, nil
}

func loadPolicyFile(path string) (*PolicySet, error) {
	data, err := fileutil.ReadFile(context.Background(), path, fileutil.MaxConfigFile)
	if err != nil {
		return nil, fmt.Errorf("security: reading policy file: %w", err)
	}
	set, err := ParseAuthorizationPolicies(data)
	if err != nil {
		return nil, fmt.Errorf("security: policy file %s: %w", path, err)
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
		if err != nil {
			w.logger.Error("security: keeping the last good authorization policies", "err", err)
			continue
		}
		w.current.Store(set.For(w.workload))
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

// Updated returns a channel that receives a value after each successful
// reload (without blocking the watcher; reloads may coalesce).
func (w *PolicyWatcher) Updated() <-chan struct{} { return w.updated }

// Close stops watching; the last policies stay in force for Evaluate. It
// is idempotent.
func (w *PolicyWatcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.stop)
		<-w.done
	})
	return nil
}
