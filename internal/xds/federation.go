package xds

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// Federation (gRFC A47, xRFC TP1): a resource named
// xdstp://<authority>/<type>/<id>[?<context params>] comes from the
// management servers of that authority in the bootstrap's authorities, or
// from the top-level xds_servers when the authority lists none. The Client
// keeps one ADS stream per distinct list of servers.

// xdstpScheme starts a new-style resource name.
const xdstpScheme = "xdstp:"

// IsXDSTP reports whether name is a new-style (xdstp://) resource name.
func IsXDSTP(name string) bool { return strings.HasPrefix(name, xdstpScheme) }

// parseXDSTP returns the authority of an xdstp:// name and its canonical
// form: context parameters sorted by key (then value), so that two
// spellings of one resource are one subscription and match the name the
// server sends back.
func parseXDSTP(name string) (authority, canonical string, err error) {
	u, err := url.Parse(name)
	if err != nil {
		return "", "", fmt.Errorf("xds: resource name %q: %w", name, err)
	}
	if u.Scheme != "xdstp" || u.Opaque != "" || u.User != nil {
		return "", "", fmt.Errorf("xds: resource name %q: not xdstp://<authority>/<type>/<id>", name)
	}
	if u.Path == "" || u.Path == "/" {
		return "", "", fmt.Errorf("xds: resource name %q: no resource type and id", name)
	}
	canonical = "xdstp://" + u.Host + u.EscapedPath()
	if q := u.Query(); len(q) > 0 {
		canonical += "?" + q.Encode() // Encode sorts by key
	}
	return u.Host, canonical, nil
}

// canonicalName is name with an xdstp:// name's context parameters
// sorted; other names, and names that do not parse, are unchanged.
func canonicalName(name string) string {
	if !IsXDSTP(name) {
		return name
	}
	if _, c, err := parseXDSTP(name); err == nil {
		return c
	}
	return name
}

// ListenerName is the Listener resource a target host names (gRFC A47):
// through the authority's client_listener_resource_name_template when
// authority is set (xds://<authority>/<host>), else through
// client_default_listener_resource_name_template. Substituted into an
// xdstp:// template, the host is percent-encoded segment by segment, as
// grpc-go encodes it.
func (b *Bootstrap) ListenerName(authority, host string) (string, error) {
	tmpl := b.ClientDefaultListenerResourceNameTemplate
	if authority != "" {
		a, ok := b.Authorities[authority]
		if !ok {
			return "", fmt.Errorf("xds: authority %q is not in the bootstrap's authorities", authority)
		}
		tmpl = a.ClientListenerResourceNameTemplate
		if tmpl == "" {
			tmpl = "xdstp://" + authority + "/envoy.config.listener.v3.Listener/%s"
		}
	}
	if tmpl == "" {
		tmpl = "%s"
	}
	return PopulateTemplate(tmpl, host), nil
}

// PopulateTemplate puts s into a listener name template in place of %s:
// percent-encoded segment by segment in an xdstp:// template, as grpc-go
// encodes it, verbatim in an old-style one.
func PopulateTemplate(tmpl, s string) string {
	if IsXDSTP(tmpl) {
		segs := strings.Split(s, "/")
		for i := range segs {
			segs[i] = url.PathEscape(segs[i])
		}
		s = strings.Join(segs, "/")
	}
	return strings.ReplaceAll(tmpl, "%s", s)
}

// serversKey identifies a list of management servers: authorities with
// equal lists share one stream.
func serversKey(s []ServerConfig) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// route returns the client that serves name and name in canonical form,
// creating the client of an authority's servers on first use.
func (c *Client) route(name string) (*Client, string, error) {
	if !IsXDSTP(name) || c.authorities == nil && c.parent != nil {
		return c, name, nil
	}
	auth, canonical, err := parseXDSTP(name)
	if err != nil {
		return nil, "", err
	}
	a, ok := c.authorities[auth]
	if !ok {
		return nil, "", fmt.Errorf("xds: resource %q: authority %q is not in the bootstrap's authorities", name, auth)
	}
	if len(a.Servers) == 0 {
		return c, canonical, nil
	}
	key := serversKey(a.Servers)
	if key == c.serversKey {
		return c, canonical, nil
	}
	c.fedMu.Lock()
	defer c.fedMu.Unlock()
	if c.fedClosed {
		return c, canonical, nil // Watch on the closed c does nothing
	}
	sub := c.federated[key]
	if sub == nil {
		sub, err = newClient(c.cfg, a.Servers, c.node, c.ser)
		if err != nil {
			return nil, "", fmt.Errorf("xds: authorities[%q]: %w", auth, err)
		}
		sub.parent = c
		if c.federated == nil {
			c.federated = map[string]*Client{}
		}
		c.federated[key] = sub
	}
	return sub, canonical, nil
}
