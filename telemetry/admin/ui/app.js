"use strict";
// The admin page: polls the admin endpoint's JSON and redraws. Every value
// shown comes from the service or its control plane, so text only ever
// enters the page as text nodes (never as markup).
(() => {
  const REFRESH_MS = 1500;
  const HISTORY = 60; // rate samples kept per service for its sparkline
  const SVG = "http://www.w3.org/2000/svg";

  let prev = null; // the previous /stats sample: {t, requests}
  const rates = new Map(); // service -> requests/s over the last interval
  const history = new Map(); // service -> recent rates, oldest first

  // h builds an element; strings become text nodes.
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v == null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "title") e.title = v;
      else e.setAttribute(k, v);
    }
    for (const c of children.flat(Infinity)) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : String(c));
    }
    return e;
  }

  const $ = (id) => document.getElementById(id);

  function pill(text, kind) {
    return h("span", { class: "pill" + (kind ? " " + kind : "") }, text);
  }

  function fmtRate(r) {
    if (r == null) return "–";
    if (r === 0) return "0";
    return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }

  function table(headers, rows, empty) {
    const head = h("tr", null, headers.map((c) =>
      h("th", { class: c.endsWith("#") ? "num" : null }, c.replace(/#$/, ""))));
    if (rows.length === 0) {
      rows = [h("tr", null, h("td", { class: "empty", colspan: String(headers.length) }, empty))];
    }
    return h("table", null, h("thead", null, head), h("tbody", null, rows));
  }

  function sparkline(values) {
    const w = 120, ht = 28;
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", String(w));
    svg.setAttribute("height", String(ht));
    svg.setAttribute("viewBox", `0 0 ${w} ${ht}`);
    const max = Math.max(1, ...values);
    const step = w / (HISTORY - 1);
    const x0 = w - step * (values.length - 1);
    const pts = values.map((v, i) =>
      `${(x0 + i * step).toFixed(1)},${(ht - 2 - (v / max) * (ht - 4)).toFixed(1)}`);
    if (pts.length > 1) {
      const area = document.createElementNS(SVG, "polygon");
      area.setAttribute("class", "area");
      area.setAttribute("points", `${x0.toFixed(1)},${ht} ${pts.join(" ")} ${w},${ht}`);
      svg.append(area);
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", pts.join(" "));
      svg.append(line);
    }
    return svg;
  }

  async function getJSON(path) {
    const r = await fetch(path, { cache: "no-store" });
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  // updateRates turns two samples of monotonically increasing counters
  // into requests per second. A counter that went down was recreated (an
  // idle xDS cluster used again); its interval is skipped.
  function updateRates(stats) {
    const now = { t: stats.now_unix_ms, requests: stats.requests || {} };
    if (prev && now.t > prev.t) {
      const dt = (now.t - prev.t) / 1000;
      for (const [name, n] of Object.entries(now.requests)) {
        const before = prev.requests[name];
        const r = before != null && n >= before ? (n - before) / dt : null;
        rates.set(name, r);
        const hist = history.get(name) || [];
        hist.push(r || 0);
        if (hist.length > HISTORY) hist.shift();
        history.set(name, hist);
      }
      for (const name of [...history.keys()]) {
        if (!(name in now.requests)) { history.delete(name); rates.delete(name); }
      }
    }
    prev = now;
  }

  // The control plane's connection, never shown healthy while it is away:
  // the resources it sent keep their ACKED state, so this is the place
  // that says the stream is down.
  function controlPlanePill(stats) {
    const cp = stats.control_plane;
    if (!stats.xds || !cp) return pill("no control plane");
    const cls = { connected: "ok", idle: "accent", reconnecting: "bad" }[cp.state] || "warn";
    const p = pill("xDS control plane " + cp.summary, cls);
    p.id = "control-plane";
    p.title = cp.text; // the server and the last error
    return p;
  }

  function renderHeader(stats) {
    $("service").textContent = stats.service || "(unnamed service)";
    document.title = (stats.service || "Weft") + " · Weft admin";
    $("badges").replaceChildren(
      controlPlanePill(stats),
      pill("mTLS " + stats.mtls, stats.mtls === "disable" ? null : "ok"),
      pill("default lb (non-xDS services) " + stats.lb_policy),
    );
  }

  function renderSummary(stats, clusters, dump) {
    let total = 0, known = false;
    for (const r of rates.values()) if (r != null) { total += r; known = true; }
    let eps = 0, healthy = 0, ejected = 0;
    for (const c of clusters || []) {
      for (const e of c.endpoints) {
        eps++;
        if (e.health === "HEALTHY" || e.health === "UNKNOWN") healthy++;
        if (e.ejected) ejected++;
      }
    }
    const stat = (k, v, small) => h("div", { class: "stat" }, h("div", { class: "k" }, k),
      h("div", { class: "v" }, v, small ? h("small", null, small) : null));
    const nacked = (dump || []).filter((r) => r.state === "NACKED").length;
    $("summary").replaceChildren(
      stat("requests / s", known ? fmtRate(total) : "–", "all services"),
      stat("services", String((clusters || []).length)),
      stat("endpoints usable", `${healthy - ejected} / ${eps}`, ejected ? `${ejected} ejected` : null),
      stats && stats.xds
        ? stat("xDS resources", String((dump || []).length), nacked ? `${nacked} NACKed` : "none NACKed")
        : stat("xDS", "off"),
    );
  }

  function healthPill(e) {
    if (e.ejected) return pill("EJECTED", "bad");
    switch (e.health) {
      case "HEALTHY": return pill("HEALTHY", "ok");
      case "UNHEALTHY": return pill("UNHEALTHY", "bad");
      case "DRAINING": return pill("DRAINING", "warn");
      default: return pill(e.health || "UNKNOWN");
    }
  }

  function renderServices(clusters) {
    if (!clusters || clusters.length === 0) {
      $("services").replaceChildren(h("p", { class: "muted" },
        "No service used yet: a service appears after the first request to it."));
      return;
    }
    $("services").replaceChildren(...clusters.map((c) => {
      const rate = rates.get(c.service);
      const rows = c.endpoints.map((e) => h("tr", null,
        h("td", { class: "mono wrap" }, e.addr),
        h("td", { class: "mono" }, e.locality || "–"),
        h("td", { class: "num" }, String(e.priority)),
        h("td", { class: "num" }, String(e.weight)),
        h("td", null, healthPill(e)),
        h("td", { class: "num" }, String(e.in_flight)),
        h("td", null, e.ejected ? pill("yes", "bad") : h("span", { class: "muted" }, "no")),
      ));
      return h("div", { class: "card service", "data-service": c.service },
        h("div", { class: "card-head" },
          h("h3", { class: "mono" }, c.service),
          pill(c.lb_policy, "accent"),
          h("span", { class: "muted" }, `${c.endpoints.length} endpoint${c.endpoints.length === 1 ? "" : "s"}`),
          h("div", { class: "rate", title: "requests sent to this service's endpoints per second" },
            sparkline(history.get(c.service) || []),
            h("span", { class: "num" }, fmtRate(rate)), h("span", { class: "unit" }, "req/s"))),
        c.discovery_error ? h("div", { class: "error" }, "discovery: " + c.discovery_error) : null,
        table(["address", "locality", "priority#", "weight#", "health", "in flight#", "ejected"], rows,
          "no endpoints"));
    }));
  }

  function target(r) {
    if (r.non_forwarding) return pill("non-forwarding: fails the request", "warn");
    if (r.weighted_clusters && r.weighted_clusters.length) {
      const bar = h("div", { class: "split" });
      const legend = h("div", { class: "legend" });
      r.weighted_clusters.forEach((w, i) => {
        const seg = h("span", { class: "c" + (i % 6), title: `${w.name}: ${w.percent.toFixed(1)}%` });
        seg.style.width = w.percent + "%";
        bar.append(seg);
        legend.append(h("span", null, h("i", { class: "c" + (i % 6) }),
          h("span", { class: "mono" }, w.name), " ",
          h("b", null, (Math.round(w.percent * 10) / 10) + "%"),
          h("span", { class: "muted" }, ` (weight ${w.weight})`)));
      });
      return [bar, legend];
    }
    return h("span", { class: "mono" }, r.cluster);
  }

  function hostState(s) {
    switch (s) {
      case "ACTIVE": return pill("ACTIVE", "ok");
      case "ERROR": return pill("ERROR", "bad");
      case "NOT_FOUND": return pill("NOT FOUND: passes through", "warn");
      default: return pill(s);
    }
  }

  function renderRoutes(hosts, xdsOn) {
    if (!xdsOn) {
      $("routes").replaceChildren(h("p", { class: "muted" },
        "No xDS control plane: services from static or DNS discovery have no routes."));
      return;
    }
    if (!hosts || hosts.length === 0) {
      $("routes").replaceChildren(h("p", { class: "muted" },
        "No host routed yet: a host's routes appear after the first request to it."));
      return;
    }
    $("routes").replaceChildren(...hosts.map((hr) => h("div", { class: "card host", "data-host": hr.host },
      h("div", { class: "card-head" }, h("h3", { class: "mono" }, hr.host), hostState(hr.state)),
      h("div", { class: "path" }, "listener ", h("b", { class: "mono" }, hr.listener),
        hr.route_config ? [" → route configuration ", h("b", { class: "mono" }, hr.route_config)] : null),
      hr.error ? h("div", { class: "error" }, hr.error) : null,
      hr.virtual_hosts.map((vh) => [
        h("h4", null, "virtual host ", h("span", { class: "mono" }, vh.name),
          h("span", { class: "chips" }, vh.domains.map((d) => h("span", { class: "chip mono" }, d)))),
        table(["#", "match", "target", "timeout", "retries"], vh.routes.map((r, i) => h("tr", null,
          h("td", { class: "num muted" }, String(i + 1)),
          h("td", { class: "mono wrap" }, r.match || "any", r.name ? h("div", { class: "muted" }, r.name) : null,
            r.rewrite ? h("div", { class: "muted" }, "rewrite " + r.rewrite) : null),
          h("td", null, target(r)),
          h("td", { class: "mono" }, r.timeout || "–"),
          h("td", { class: "mono" }, r.retries || "–"))), "no routes"),
      ]))));
  }

  function resourceState(s) {
    switch (s) {
      case "ACKED": return pill("ACKED", "ok");
      case "NACKED": return pill("NACKED", "bad");
      case "REQUESTED": return pill("REQUESTED", "warn");
      default: return pill(s);
    }
  }

  function renderXDS(dump, xdsOn) {
    if (!xdsOn) {
      $("xds").replaceChildren(h("p", { class: "muted" }, "No xDS control plane configured."));
      return;
    }
    const rows = (dump || []).map((r) => h("tr", null,
      h("td", null, pill(r.type)),
      h("td", { class: "mono wrap" }, r.name),
      h("td", null, resourceState(r.state)),
      h("td", { class: "mono wrap" }, r.version || "–"),
      h("td", { class: "wrap" }, r.last_nack ? h("span", { class: "error" }, r.last_nack) : "–"),
      h("td", { class: "mono wrap" }, r.unapplied_fields && r.unapplied_fields.length
        ? r.unapplied_fields.join(", ") : "–")));
    $("xds").replaceChildren(h("div", { class: "card" },
      table(["type", "name", "state", "version", "last NACK", "unapplied fields"], rows, "nothing subscribed yet")));
  }

  function setStatus(ok, text) {
    $("status").className = "status " + (ok ? "live" : "down");
    $("status-text").textContent = text;
  }

  async function tick() {
    const [stats, clusters, routes, dump] = await Promise.allSettled(
      ["stats", "clusters", "routes", "config_dump?format=weft&resources=false"].map(getJSON));
    const failed = [stats, clusters, routes, dump].filter((r) => r.status === "rejected");
    const val = (r) => (r.status === "fulfilled" ? r.value : null);
    try {
      const st = val(stats);
      if (st) { updateRates(st); renderHeader(st); }
      const xdsOn = st ? st.xds : false;
      if (val(clusters)) renderServices(val(clusters));
      if (val(routes)) renderRoutes(val(routes), xdsOn);
      if (val(dump)) renderXDS(val(dump), xdsOn);
      if (st) renderSummary(st, val(clusters), val(dump));
    } catch (err) {
      failed.push({ reason: err });
    }
    if (failed.length) {
      setStatus(false, "admin endpoint unreachable, retrying: " + failed[0].reason.message);
    } else {
      setStatus(true, "live · " + new Date().toLocaleTimeString("en-GB"));
    }
    // The next poll starts after this one ends, so a slow endpoint never
    // piles requests up.
    setTimeout(tick, REFRESH_MS);
  }

  tick();
})();
