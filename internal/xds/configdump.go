package xds

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ConfigDump returns the watched resources as Envoy's admin endpoint
// dumps them: the JSON of an envoy.admin.v3.ConfigDump holding a
// ClustersConfigDump, a ListenersConfigDump, a RoutesConfigDump and an
// EndpointsConfigDump (in Envoy's order), each resource as received (its
// Any), with its version, when it was last updated, its client_status
// and, for a rejected version, the error_state Envoy gives it
// (failed_configuration, last_update_attempt, details). Tools that read
// Envoy's /config_dump (istioctl proxy-config among them) read this.
//
// Resources nest typed extensions; one whose type this binary does not
// link shows as its "@type" alone rather than failing the dump.
func (c *Client) ConfigDump() ([]byte, error) {
	dump := c.configDump()
	b, err := protojson.MarshalOptions{UseProtoNames: true, Resolver: lenientResolver{}}.Marshal(dump)
	if err != nil {
		return nil, errors.New("xds: config dump: " + err.Error())
	}
	// protojson varies its whitespace on purpose; people read this with
	// curl and grep, so it is indented the one way encoding/json does.
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, errors.New("xds: config dump: " + err.Error())
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// dumped is one resource's entry fields, common to the four dump types.
type dumped struct {
	name    string
	version string
	res     *anypb.Any
	updated *timestamppb.Timestamp
	failed  *adminv3.UpdateFailureState
	status  adminv3.ClientResourceStatus
}

func (c *Client) configDump() *adminv3.ConfigDump {
	c.mu.Lock()
	var byType [numTypes][]dumped
	var versions [numTypes]string
	for t := range numTypes {
		versions[t] = c.versions[t]
		for name, rs := range c.resources[t] {
			if rs.idle {
				continue
			}
			d := dumped{name: name, version: rs.version, status: adminv3.ClientResourceStatus_REQUESTED}
			if rs.res != nil {
				// The bytes are the response's own: no copy is kept
				// beyond the one the client holds to spot resends.
				d.res = &anypb.Any{TypeUrl: t.TypeURL(), Value: rs.raw}
				d.status = adminv3.ClientResourceStatus_ACKED
				if !rs.updated.IsZero() {
					d.updated = timestamppb.New(rs.updated)
				}
			}
			switch {
			case rs.err != nil:
				d.status = adminv3.ClientResourceStatus_NACKED
				fs := &adminv3.UpdateFailureState{Details: rs.err.Error()}
				if f := rs.failed; f != nil {
					fs.FailedConfiguration = &anypb.Any{TypeUrl: t.TypeURL(), Value: f.raw}
					fs.LastUpdateAttempt = timestamppb.New(f.at)
					fs.VersionInfo = f.version
				}
				d.failed = fs
			case rs.dne:
				d.status = adminv3.ClientResourceStatus_DOES_NOT_EXIST
			}
			byType[t] = append(byType[t], d)
		}
	}
	c.mu.Unlock()
	for t := range byType {
		slices.SortFunc(byType[t], func(a, b dumped) int { return strings.Compare(a.name, b.name) })
	}

	cds := &adminv3.ClustersConfigDump{VersionInfo: versions[ClusterType]}
	for _, d := range byType[ClusterType] {
		cds.DynamicActiveClusters = append(cds.DynamicActiveClusters, &adminv3.ClustersConfigDump_DynamicCluster{
			VersionInfo: d.version, Cluster: d.res, LastUpdated: d.updated, ErrorState: d.failed, ClientStatus: d.status})
	}
	lds := &adminv3.ListenersConfigDump{VersionInfo: versions[ListenerType]}
	for _, d := range byType[ListenerType] {
		l := &adminv3.ListenersConfigDump_DynamicListener{Name: d.name, ErrorState: d.failed, ClientStatus: d.status}
		if d.res != nil {
			l.ActiveState = &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: d.version, Listener: d.res, LastUpdated: d.updated}
		}
		lds.DynamicListeners = append(lds.DynamicListeners, l)
	}
	rds := &adminv3.RoutesConfigDump{}
	for _, d := range byType[RouteConfigType] {
		rds.DynamicRouteConfigs = append(rds.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: d.version, RouteConfig: d.res, LastUpdated: d.updated, ErrorState: d.failed, ClientStatus: d.status})
	}
	eds := &adminv3.EndpointsConfigDump{}
	for _, d := range byType[EndpointsType] {
		eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: d.version, EndpointConfig: d.res, LastUpdated: d.updated, ErrorState: d.failed, ClientStatus: d.status})
	}
	out := &adminv3.ConfigDump{}
	for _, m := range []proto.Message{cds, lds, rds, eds} {
		a, err := anypb.New(m)
		if err != nil {
			continue // the admin types are linked: cannot happen
		}
		out.Configs = append(out.Configs, a)
	}
	return out
}

// lenientResolver resolves types as the global registry does, and a type
// URL it does not know as an empty message, so that an extension this
// binary does not link (a control plane's own filter) shows as its
// "@type" instead of failing the whole dump.
type lenientResolver struct{}

func (lenientResolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(n)
}

func (lenientResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return (&emptypb.Empty{}).ProtoReflect().Type(), nil
	}
	return mt, err
}

func (lenientResolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(n)
}

func (lenientResolver) FindExtensionByNumber(m protoreflect.FullName, n protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(m, n)
}
