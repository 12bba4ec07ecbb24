// Package admin is Weft's admin listener: the operator's endpoint, on a
// port of its own and never the service's. It serves a live HTML page at
// / and, as JSON for curl and tools:
//
//   - /healthz and /readyz (503 with the reason while not ready);
//   - /stats: identity, mTLS mode, control-plane state, request counters;
//   - /stats/golden: request rate, success rate and p50/p95/p99 per
//     direction, route and caller, as Linkerd's `viz stat` shows them;
//   - /clusters, /routes: services, endpoints and xDS routes in force;
//   - /inbound: the server side: identity, mTLS mode per inbound
//     listener, the authorization policies in force and recent decisions;
//   - /config_dump: the xDS resources as received, in the JSON of Envoy's
//     envoy.admin.v3.ConfigDump, or Weft's own view with ?format=weft;
//   - /metrics (WithMetrics) and /debug/pprof/ (WithPprof).
//
// Everything it shows comes from a [Source], a narrow interface of plain
// values that the mesh implements; this package imports nothing of the
// mesh. [Server.Handle] mounts more endpoints beside these (the mesh's
// /tap and /explain), behind the same Host check.
//
// The Host check answers only localhost, loopback addresses, the
// listener's own address and the hosts given with WithHosts
// (WEFT_ADMIN_HOSTS): a web page cannot read the endpoint through DNS
// rebinding.
//
// [Golden] and [DecisionLog] are the recorders behind /stats/golden and
// /inbound's decisions, cheap enough for the data path: a known key costs
// a read lock and atomic adds, an allowed decision an atomic add.
package admin
