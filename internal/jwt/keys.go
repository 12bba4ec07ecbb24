package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// MaxJWKSSize bounds a JWKS document, inline or fetched: a key set is a
// few KiB, and a server answering with gigabytes must not be read whole.
const MaxJWKSSize = 1 << 20

// maxKeys bounds the keys of one set, so candidates stay cheap to try.
const maxKeys = 100

// KeySet is a parsed JWKS: the public signature keys it holds. Immutable.
type KeySet struct {
	keys []jose.JSONWebKey
}

// ParseKeySet parses a JWKS document ({"keys": [...]}). Keys go-jose cannot
// read, symmetric keys and encryption keys are skipped, as they can never
// verify an allowed signature; a set left with no key is an error.
func ParseKeySet(data []byte) (*KeySet, error) {
	if len(data) > MaxJWKSSize {
		return nil, fmt.Errorf("jwt: JWKS larger than %d bytes", MaxJWKSSize)
	}
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("jwt: JWKS is not a JSON key set: %v", err)
	}
	if len(doc.Keys) > maxKeys {
		return nil, fmt.Errorf("jwt: JWKS has %d keys, more than %d", len(doc.Keys), maxKeys)
	}
	ks := &KeySet{}
	var skipped []string
	for i, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
			continue
		}
		if !k.Valid() || (k.Use != "" && k.Use != "sig") {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: not a signature key", i))
			continue
		}
		if !k.IsPublic() {
			pub := k.Public()
			if !pub.Valid() {
				skipped = append(skipped, fmt.Sprintf("keys[%d]: symmetric key", i))
				continue
			}
			k = pub
		}
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("jwt: JWKS has no usable public key (%v)", skipped)
		}
		return nil, errors.New("jwt: JWKS has no keys")
	}
	return ks, nil
}

// candidates returns the keys that may have signed a token with kid and
// alg: those with that kid when the token names one (Envoy's rule), else
// every key; a key that declares an algorithm must declare alg.
func (s *KeySet) candidates(kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, k := range s.keys {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if k.Algorithm != "" && k.Algorithm != alg {
			continue
		}
		out = append(out, k)
	}
	return out
}

// Len is the number of usable keys.
func (s *KeySet) Len() int { return len(s.keys) }

// keySource gives a provider's keys.
type keySource interface {
	// keys returns the current key set, waiting for the first fetch up to
	// ctx; nil when none is known.
	keys(ctx context.Context) *KeySet
}

type staticKeys struct{ ks *KeySet }

func (s staticKeys) keys(context.Context) *KeySet { return s.ks }

// Registry owns the remote JWKS caches of a process: one per URI, cache
// duration and timeout, shared by every provider naming it, so a listener
// update that keeps a provider keeps its keys and fetches nothing. A cache
// lives while an [Authenticator] holds it. Close stops every fetch. Safe
// for concurrent use.
type Registry struct {
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu     sync.Mutex
	caches map[remoteKey]*remoteKeys
	closed bool
}

type remoteKey struct {
	uri          string
	ttl, timeout time.Duration
}

// NewRegistry returns a Registry fetching with client (nil: a client of
// its own, whose idle connections Close closes) and logging to log.
func NewRegistry(client *http.Client, log *slog.Logger) *Registry {
	if client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		client = &http.Client{Transport: t}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Registry{client: client, log: log, now: time.Now, caches: map[remoteKey]*remoteKeys{}}
}

// acquire returns the cache for p's JWKS URI, starting it on first use,
// and a release func; after Close it returns a source with no keys.
func (r *Registry) acquire(p *Provider) (keySource, func()) {
	k := remoteKey{uri: p.JWKSURI, ttl: p.CacheDuration, timeout: p.FetchTimeout}
	if k.ttl <= 0 {
		k.ttl = DefaultCacheDuration
	}
	if k.timeout <= 0 {
		k.timeout = DefaultFetchTimeout
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return staticKeys{}, func() {}
	}
	c := r.caches[k]
	if c == nil {
		c = newRemoteKeys(r, k)
		r.caches[k] = c
	}
	c.refs++
	var once sync.Once
	return c, func() {
		once.Do(func() {
			r.mu.Lock()
			c.refs--
			last := c.refs == 0 && r.caches[k] == c
			if last {
				delete(r.caches, k)
			}
			r.mu.Unlock()
			if last {
				c.stop()
			}
		})
	}
}

// Close stops every fetch and waits for the fetchers to return. It is
// idempotent.
func (r *Registry) Close() {
	r.mu.Lock()
	r.closed = true
	cs := r.caches
	r.caches = map[remoteKey]*remoteKeys{}
	r.mu.Unlock()
	for _, c := range cs {
		c.stop()
	}
	if t, ok := r.client.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
}

// remoteKeys is one remote JWKS: fetched at once, then every ttl; on a
// failure retried sooner (1 s doubling up to ttl) while the last good keys
// keep serving, as Envoy keeps its cached JWKS.
type remoteKeys struct {
	r    *Registry
	k    remoteKey
	refs int // guarded by r.mu

	mu      sync.Mutex
	current *KeySet
	ready   chan struct{} // closed after the first attempt
	cancel  context.CancelFunc
	done    chan struct{}
}

func newRemoteKeys(r *Registry, k remoteKey) *remoteKeys {
	ctx, cancel := context.WithCancel(context.Background())
	c := &remoteKeys{r: r, k: k, ready: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	go c.run(ctx)
	return c
}

func (c *remoteKeys) stop() {
	c.cancel()
	<-c.done
}

func (c *remoteKeys) keys(ctx context.Context) *KeySet {
	select {
	case <-c.ready:
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

func (c *remoteKeys) run(ctx context.Context) {
	defer close(c.done)
	var readyOnce sync.Once
	defer readyOnce.Do(func() { close(c.ready) })
	failing := false
	lastErr := ""
	backoff := time.Second
	for {
		ks, err := c.fetch(ctx)
		if ctx.Err() != nil {
			return
		}
		wait := c.k.ttl
		if err != nil {
			// Log once per state change: the first failure, and a failure
			// that reads differently; not every retry.
			if msg := err.Error(); !failing || msg != lastErr {
				c.mu.Lock()
				stale := c.current != nil
				c.mu.Unlock()
				c.r.log.Warn("jwt: fetching JWKS failed", "uri", c.k.uri, "error", err, "keeping_last_good_keys", stale)
				lastErr = msg
			}
			failing = true
			wait = min(backoff, c.k.ttl)
			backoff = min(2*backoff, c.k.ttl)
		} else {
			if failing {
				c.r.log.Info("jwt: fetching JWKS recovered", "uri", c.k.uri, "keys", ks.Len())
			}
			failing, lastErr, backoff = false, "", time.Second
			c.mu.Lock()
			c.current = ks
			c.mu.Unlock()
		}
		readyOnce.Do(func() { close(c.ready) })
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (c *remoteKeys) fetch(ctx context.Context) (*KeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, c.k.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.k.uri, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.r.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSSize+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxJWKSSize {
		return nil, fmt.Errorf("body larger than %d bytes", MaxJWKSSize)
	}
	return ParseKeySet(body)
}
