package security

import (
	"log/slog"
	"time"
)

// DefaultPollInterval is how often file watchers ([NewFileSource],
// [WatchPolicyFile]) look for changes when no [WithPollInterval] is given.
const DefaultPollInterval = time.Second

// DefaultPeekTimeout is how long [PermissiveListener] waits for a new
// connection's first byte when no [WithPeekTimeout] is given.
const DefaultPeekTimeout = 10 * time.Second

// An Option configures a constructor of this package. Each option names the
// constructors that read it; the others ignore it. A nil Option is ignored.
// Options are immutable and may be shared between constructors and
// goroutines.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	pollInterval time.Duration
	peekTimeout  time.Duration
	logger       *slog.Logger
	workload     Workload
}

func newOptions(opts []Option) options {
	o := options{pollInterval: DefaultPollInterval, peekTimeout: DefaultPeekTimeout}
	for _, opt := range opts {
		if opt != nil {
			opt.apply(&o)
		}
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	return o
}

// WithPollInterval sets how often [NewFileSource] and [WatchPolicyFile] stat
// their files for changes (modification time and size). Zero or negative
// keeps DefaultPollInterval.
func WithPollInterval(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.pollInterval = d
		}
	})
}

// WithLogger sets the logger for reload errors ([NewFileSource],
// [WatchPolicyFile]), for denied and audited requests
// ([AuthorizationHandler], [UnaryServerInterceptor],
// [StreamServerInterceptor]), for requests refused because their path
// cannot be normalized ([NormalizeRequest], [AuthorizationHandler]) and
// for dropped connections ([PermissiveListener]). Nil means slog.Default().
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) { o.logger = l })
}

// WithPeekTimeout bounds how long [PermissiveListener] waits for a new
// connection's first byte before dropping it. Zero or negative keeps
// DefaultPeekTimeout.
func WithPeekTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.peekTimeout = d
		}
	})
}
