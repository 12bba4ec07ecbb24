package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/xds"
	"github.com/weftmesh/weft/telemetry/admin"
)

// repeatEvery bounds how often the same state (a control plane still
// unreachable) is logged again: once per interval, with a count of the
// attempts not logged.
const repeatEvery = 30 * time.Second

// logStart writes the one line that says what this mesh is: who it is,
// how it secures and discovers, where its control plane and admin are.
func (m *Mesh) logStart() {
	attrs := []any{"service", m.cfg.serviceName, "mtls", m.mtlsMode().String()}
	if m.id != nil {
		if svid, err := m.id.src.GetX509SVID(); err == nil && svid != nil {
			attrs = append(attrs, "identity", svid.ID.String())
			if len(svid.Certificates) > 0 {
				attrs = append(attrs, "identity_expires", svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
			}
		}
	} else {
		attrs = append(attrs, "identity", "none")
	}
	attrs = append(attrs, "static_services", len(m.cfg.endpoints), "dns_services", len(m.cfg.dnsServices))
	if m.xds != nil {
		proto := "sotw"
		if m.cfg.xdsDelta {
			proto = "delta"
		}
		attrs = append(attrs, "xds_server", m.xds.serverURI, "xds_protocol", proto)
	} else {
		attrs = append(attrs, "xds_server", "none")
	}
	admin := "off"
	if m.adminBound != "" {
		admin = m.adminBound
	}
	attrs = append(attrs, "admin", admin, "lb_policy", m.cfg.lbPolicy)
	m.log.Info("weft: mesh started", attrs...)
}

// cpLogger turns the xDS client's events into log lines: one for each
// change of the connection, each configuration version applied or
// rejected, and, while the control plane stays away, at most one line per
// repeatEvery however often the client retries.
type cpLogger struct {
	log *slog.Logger

	mu         sync.Mutex
	lastLogged time.Time // of the last "unreachable" or "lost" line
	suppressed int       // failed attempts not logged since
	attempts   int       // failed attempts since the last connection
}

func sinceLastGood(e xds.Event) string {
	if e.LastGood.IsZero() {
		return "never"
	}
	return e.At.Sub(e.LastGood).Round(time.Millisecond).String()
}

func (l *cpLogger) event(e xds.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e.Kind {
	case xds.EventConnected:
		attrs := []any{"server", e.Server, "since_last_good_config", sinceLastGood(e), "failed_attempts", l.attempts}
		if !e.DownSince.IsZero() {
			attrs = append(attrs, "down_for", e.At.Sub(e.DownSince).Round(time.Millisecond).String())
		}
		l.log.Info("weft: control plane connected", attrs...)
		l.lastLogged, l.suppressed, l.attempts = time.Time{}, 0, 0
	case xds.EventLost:
		l.log.Warn("weft: control plane lost", "server", e.Server, "error", errString(e.Err),
			"since_last_good_config", sinceLastGood(e))
		l.lastLogged, l.suppressed, l.attempts = e.At, 0, 0
	case xds.EventConnectFailed:
		l.attempts++
		if !l.lastLogged.IsZero() && e.At.Sub(l.lastLogged) < repeatEvery {
			l.suppressed++
			return
		}
		msg := "weft: control plane still unreachable"
		if l.lastLogged.IsZero() && e.LastGood.IsZero() {
			msg = "weft: control plane unreachable"
		}
		l.log.Warn(msg, "server", e.Server, "error", errString(e.Err), "failed_attempts", l.attempts,
			"suppressed", l.suppressed, "since_last_good_config", sinceLastGood(e))
		l.lastLogged, l.suppressed = e.At, 0
	case xds.EventApplied:
		// Endpoints churn with every deployment and autoscaling step:
		// their versions are Debug, the rest of the config Info.
		level := slog.LevelInfo
		if e.Type == xds.EndpointsType {
			level = slog.LevelDebug
		}
		l.log.Log(context.Background(), level, "weft: xDS config applied", "type", e.Type.String(), "version", e.Version, "resources", e.Count)
	case xds.EventNACKed:
		l.log.Warn("weft: xDS config rejected", "type", e.Type.String(), "version", e.Version, "error", errString(e.Err))
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// controlPlane returns the control plane's state, nil without one.
func (m *Mesh) controlPlane(now time.Time) *admin.ControlPlane {
	if m.xds == nil {
		return nil
	}
	c := m.xds.client.Connection()
	// Ready unless the mesh asked and no configuration ever came: a last
	// good configuration keeps serving while the stream is away.
	st := &admin.ControlPlane{State: c.State.String(), Server: c.Server, LastError: c.LastError,
		Ready: c.Server == "" || !c.LastGood.IsZero()}
	if !c.Since.IsZero() {
		st.Since = c.Since.UTC().Format(time.RFC3339)
	}
	var b, sum strings.Builder
	switch c.State {
	case xds.ConnConnected:
		fmt.Fprintf(&b, "connected to %s since %s", c.Server, st.Since)
		sum.WriteString("connected")
	case xds.ConnReconnecting:
		fmt.Fprintf(&b, "reconnecting to %s since %s (last error: %s)", c.Server, st.Since, c.LastError)
		fmt.Fprintf(&sum, "reconnecting since %s UTC", c.Since.UTC().Format(time.TimeOnly))
	default:
		if c.Server == "" {
			// Nothing watched yet: the client connects on first use.
			st.State = "idle"
			b.WriteString("idle: not contacted yet, nothing subscribed")
			sum.WriteString("idle")
			break
		}
		fmt.Fprintf(&b, "never connected to %s", c.Server)
		sum.WriteString("never connected")
		if c.LastError != "" {
			fmt.Fprintf(&b, " (last error: %s)", c.LastError)
		}
	}
	if !c.LastGood.IsZero() {
		age := now.Sub(c.LastGood)
		secs := age.Seconds()
		st.ConfigAgeSeconds = &secs
		fmt.Fprintf(&b, "; config age %s", age.Round(time.Second))
		fmt.Fprintf(&sum, " · config age %s", age.Round(time.Second))
	} else if c.State != xds.ConnNever {
		b.WriteString("; no config accepted yet")
		sum.WriteString(" · no config yet")
	}
	st.Text, st.Summary = b.String(), sum.String()
	return st
}

// watchIdentity logs each rotation of this service's SVID, when its
// source tells of updates (the Workload API and SVID files do).
func (m *Mesh) watchIdentity() {
	// A source passed in by the program may have its own reader of
	// Updated, which a second reader would rob of notifications.
	if m.id == nil || !m.id.owned {
		return
	}
	up, ok := m.id.src.(interface{ Updated() <-chan struct{} })
	if !ok {
		return
	}
	last := ""
	if svid, err := m.id.src.GetX509SVID(); err == nil && svid != nil && len(svid.Certificates) > 0 {
		last = svid.Certificates[0].SerialNumber.String()
	}
	ch := up.Updated()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-ch:
			}
			svid, err := m.id.src.GetX509SVID()
			if err != nil || svid == nil || len(svid.Certificates) == 0 {
				continue
			}
			leaf := svid.Certificates[0]
			if serial := leaf.SerialNumber.String(); serial != last {
				last = serial
				m.log.Info("weft: SVID rotated", "identity", svid.ID.String(),
					"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "serial", serial)
			}
		}
	}()
}

// logEjections logs each outlier ejection from cluster, and each return.
func (m *Mesh) logEjections(cluster string) balancer.ClusterOption {
	return balancer.OnEjection(func(ctx context.Context, addr string, ejected bool) {
		if ejected {
			// ctx is the request whose failure ejected it, when one did.
			m.limited.WarnContext(ctx, "weft: endpoint ejected", "cluster", cluster, "address", addr)
			return
		}
		m.limited.InfoContext(ctx, "weft: endpoint returned", "cluster", cluster, "address", addr)
	})
}

// watchPolicy logs each reload of the authorization policy file and each
// content refused (the last good policies staying in force), once per
// change the watcher reads.
func (m *Mesh) watchPolicy() {
	if m.authz == nil {
		return
	}
	w := m.authz
	last := w.Status()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			select {
			case <-m.ctx.Done():
				return
			case <-w.Updated():
			}
			st := w.Status()
			if st.Version != last.Version {
				m.log.Info("weft: authorization policy reloaded", "file", st.Path, "version", st.Version,
					"policies", w.Policies().Len())
			}
			if st.Err != nil && !st.ErrAt.Equal(last.ErrAt) {
				// The same bad content saved again is one line per
				// limitEvery.
				m.limited.Warn("weft: authorization policy rejected; keeping the last good authorization policies", "file", st.Path,
					"version_in_force", st.Version, "error", st.Err.Error())
			}
			last = st
		}
	}()
}
