// Package devplane is a small xDS management server for development: it
// turns a YAML file describing services, their versions and the traffic
// policy between them into Listener, RouteConfiguration, Cluster and
// ClusterLoadAssignment resources, and serves them over ADS to Weft and to
// any grpc-go xDS client, without Kubernetes.
//
// A config is read with [Load] or [Parse]; every mistake in it is reported
// with the file and line ("mesh.yaml:12: services[0].split: weights must
// sum to > 0"). A [Server] serves the last config given to [Server.Apply];
// [Server.WatchFile] reloads a file when it changes and keeps the last good
// config when the new one is broken. [BootstrapJSON] writes the gRPC xDS
// bootstrap that points a client at the server.
//
// Each service becomes:
//
//   - two API listeners, "<service>:<port>" and "<service>", so that
//     "http://orders:8080/" and "xds:///orders:8080" (which asks for exactly
//     the name in the target) both resolve; both name the route
//     configuration "<service>" over ADS;
//   - the route configuration "<service>": one virtual host for
//     "<service>" and "<service>:<port>" holding the configured routes in
//     order, then a catch-all "/" route carrying the service's split;
//   - one EDS cluster, and one load assignment, per version, named
//     "<service>-<version>".
//
// The server is built on go-control-plane's snapshot cache. Every node gets
// the same snapshot, whatever its id, and partial subscriptions are
// answered, because proxyless clients ask only for the names they use.
package devplane
