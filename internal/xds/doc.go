// Package xds is Weft's xDS client: it parses gRPC's bootstrap file, keeps
// one ADS stream to a management server (one per server with federation,
// gRFC A47: xdstp:// names go to their authority's servers), validates the
// Listener, RouteConfiguration, Cluster and ClusterLoadAssignment resources
// it receives the way grpc-go validates them, and translates them into
// immutable snapshots (Listener, RouteConfig, Cluster, Endpoints) that the
// data path reads without locks.
//
// The grpc-go xDS client is the reference for what a resource means: a
// resource grpc-go would NACK is NACKed here with an error naming the
// resource and the field, and the last good version keeps serving. Fields a
// resource sets but Weft does not apply are recorded per resource
// (UnappliedFields) so a config dump (Client.Dump) can show them instead of
// silently dropping them.
//
// The client follows the gRFCs on failure: cached resources keep serving
// while the management server is away (A57); the next server of the
// bootstrap is used while the first is unreachable, and the client returns
// to the first when it is back (A71); a Listener or Cluster missing from a
// response is deleted unless the server sets ignore_resource_deletion
// (A53). A control plane that resends a rejected version in a loop gets
// re-NACKs paced from 100 ms up to 2 s, not a busy client.
//
// Clusters whose lrs_server is self report their load over LRS
// (Client.ReportLoad): one LoadReportingService stream to the management
// server, open while any cluster reports, with counters per locality that
// the data path updates without allocating.
//
// RouteConfig.Match picks a virtual host and route for a request without
// allocating; its matchers are compiled when the resource is translated.
package xds
