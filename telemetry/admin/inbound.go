package admin

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Inbound is the server side of the service, as /inbound reports it.
type Inbound struct {
	// Identity is the SPIFFE ID callers see, "" without one.
	Identity string `json:"identity,omitempty"`
	// MTLS is the mesh's own mode (WEFT_MTLS), which serves every port
	// not under an xDS inbound listener.
	MTLS string `json:"mtls"`
	// Listeners are the xDS inbound listeners the servers follow, each
	// with its filter chains' TLS modes and RBAC filters.
	Listeners []InboundListener `json:"listeners"`
	// Policies are the authorization policies of WEFT_AUTHZ_POLICY in
	// force, in evaluation order (DENY, then ALLOW, then AUDIT).
	Policies []Policy `json:"policies,omitempty"`
	// PolicyFile is the file they come from; PolicyError why its latest
	// version was rejected (the previous one keeps serving).
	PolicyFile  string `json:"policy_file,omitempty"`
	PolicyError string `json:"policy_error,omitempty"`
	// Allowed and Denied count every authorization decision since start.
	Allowed uint64 `json:"allowed"`
	Denied  uint64 `json:"denied"`
	// Decisions are the recent decisions, newest first: every denial,
	// allowed requests sampled.
	Decisions []Decision `json:"decisions"`
}

// InboundListener is one xDS inbound listener.
type InboundListener struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// State is PENDING, ACTIVE, NOT_FOUND (the servers apply the mesh's
	// own mode) or ERROR.
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	// Mode sums the chains up as Istio's PeerAuthentication would:
	// STRICT, PERMISSIVE (TLS and plaintext served), DISABLE, or TLS
	// (server-side TLS without client certificates).
	Mode   string         `json:"mode,omitempty"`
	Chains []InboundChain `json:"chains,omitempty"`
}

// InboundChain is one filter chain of an inbound listener.
type InboundChain struct {
	Name string `json:"name,omitempty"`
	// Match says in words which connections the chain takes.
	Match string `json:"match"`
	// MTLS is the transport the chain requires: STRICT (client
	// certificate required), TLS (server-side only), or PLAINTEXT.
	MTLS        string   `json:"mtls"`
	RouteConfig string   `json:"route_config,omitempty"`
	RBAC        []Policy `json:"rbac,omitempty"`
}

// Policy is one authorization policy and its rules in words.
type Policy struct {
	Name string `json:"name"`
	// Action is ALLOW, DENY, AUDIT or LOG.
	Action string `json:"action"`
	// Filter is the xDS RBAC filter holding the policy, "" for the
	// policy file.
	Filter string   `json:"filter,omitempty"`
	Rules  []string `json:"rules"`
}

// Decision is one authorization decision.
type Decision struct {
	Time    time.Time `json:"time"`
	Allowed bool      `json:"allowed"`
	// Engine is "xds_rbac" (the inbound listener's RBAC filters) or
	// "policy" (WEFT_AUTHZ_POLICY).
	Engine string `json:"engine"`
	// Rule is the policy that decided; "" when none matched and the
	// default decided (an ALLOW policy set matching nothing denies).
	Rule string `json:"rule"`
	// Peer is the caller's SPIFFE ID, else its address.
	Peer     string `json:"peer"`
	Protocol string `json:"protocol"` // http or grpc
	Method   string `json:"method"`
	Path     string `json:"path"`
}

// decisionsKept is how many decisions of each kind the log holds.
const decisionsKept = 100

// allowedEvery spaces the allowed decisions the log records: a busy
// server allows thousands a second, and the denials, which an operator
// comes looking for, must not be pushed out by them.
const allowedEvery = 50 * time.Millisecond

// DecisionLog keeps the recent authorization decisions: the last 100
// denials, and the last 100 allowed decisions sampled at most one per
// 50 ms, with a count of each. Safe for concurrent use. An allowed
// decision costs an atomic add and a clock read unless it is sampled.
type DecisionLog struct {
	allowed, denied atomic.Uint64
	nextAllowed     atomic.Int64 // unix ns before which allowed decisions are not sampled

	mu        sync.Mutex
	allowRing [decisionsKept]Decision
	denyRing  [decisionsKept]Decision
	nAllow    int // decisions ever put in allowRing
	nDeny     int
	now       func() time.Time
}

// NewDecisionLog returns an empty log.
func NewDecisionLog() *DecisionLog { return &DecisionLog{now: time.Now} }

// Allow counts an allowed decision and reports whether it should be
// recorded (then the caller builds the Decision and calls Record). A nil
// log counts nothing and asks for nothing.
func (l *DecisionLog) Allow() bool {
	if l == nil {
		return false
	}
	l.allowed.Add(1)
	now := l.now().UnixNano()
	next := l.nextAllowed.Load()
	return now >= next && l.nextAllowed.CompareAndSwap(next, now+int64(allowedEvery))
}

// Deny counts a denial; every denial is recorded (call Record). It
// reports whether the log is there to record it.
func (l *DecisionLog) Deny() bool {
	if l == nil {
		return false
	}
	l.denied.Add(1)
	return true
}

// Record keeps d, with its Time set when zero.
func (l *DecisionLog) Record(d Decision) {
	if l == nil {
		return
	}
	if d.Time.IsZero() {
		d.Time = l.now()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if d.Allowed {
		l.allowRing[l.nAllow%decisionsKept] = d
		l.nAllow++
	} else {
		l.denyRing[l.nDeny%decisionsKept] = d
		l.nDeny++
	}
}

// Snapshot returns the counts and the decisions kept, newest first.
func (l *DecisionLog) Snapshot() (allowed, denied uint64, recent []Decision) {
	recent = []Decision{}
	if l == nil {
		return 0, 0, recent
	}
	l.mu.Lock()
	recent = append(recent, l.allowRing[:min(l.nAllow, decisionsKept)]...)
	recent = append(recent, l.denyRing[:min(l.nDeny, decisionsKept)]...)
	l.mu.Unlock()
	slices.SortStableFunc(recent, func(a, b Decision) int { return b.Time.Compare(a.Time) })
	return l.allowed.Load(), l.denied.Load(), recent
}
