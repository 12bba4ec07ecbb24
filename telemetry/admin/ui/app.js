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
    $("badges").replaceChildren(...[
      controlPlanePill(stats),
      pill("mTLS " + stats.mtls, stats.mtls === "disable" ? null : "ok"),
      stats.identity ? pill(stats.identity, "accent") : null,
      pill("default lb (non-xDS services) " + stats.lb_policy),
    ].filter((x) => x));
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
            r.rewrite ? h("div", { class: "muted" }, "rewrite " + r.rewrite) : null,
            r.mirror ? h("div", { class: "muted" }, "mirror " + r.mirror) : null),
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

  function fmtMs(v) {
    if (v == null) return "–";
    return v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v).toLocaleString("en-US");
  }

  function successPill(sr) {
    if (sr == null) return h("span", { class: "muted" }, "–");
    const pct = Math.round(sr * 1000) / 10 + "%";
    return pill(pct, sr >= 0.99 ? "ok" : sr >= 0.9 ? "warn" : "bad");
  }

  // renderGolden shows /stats/golden as Linkerd's viz stat does: one row
  // per direction, route and caller.
  function renderGolden(rows) {
    if (!rows || rows.length === 0) {
      $("golden").replaceChildren(h("p", { class: "muted" }, "No traffic yet: a row appears after the first request either way."));
      return;
    }
    const body = rows.map((g) => h("tr", { "data-direction": g.direction },
      h("td", null, pill(g.direction, g.direction === "inbound" ? "accent" : null)),
      h("td", { class: "mono wrap" }, g.direction === "inbound" ? (g.caller || "(no identity)") : (g.service || "–")),
      h("td", { class: "mono wrap" }, g.route || "–"),
      h("td", { class: "num" }, fmtRate(g.rps)),
      h("td", null, successPill(g.success_rate)),
      h("td", { class: "num" }, fmtMs(g.p50_ms)),
      h("td", { class: "num" }, fmtMs(g.p95_ms)),
      h("td", { class: "num" }, fmtMs(g.p99_ms)),
      h("td", { class: "num muted" }, String(g.total))));
    $("golden").replaceChildren(h("div", { class: "card" },
      table(["direction", "caller / service", "route", "rps#", "success", "p50 ms#", "p95 ms#", "p99 ms#", "total#"], body, "")));
  }

  function modePill(m) {
    switch (m) {
      case "STRICT": case "strict": return pill("mTLS " + m, "ok");
      case "PERMISSIVE": case "permissive": return pill("mTLS " + m, "warn");
      case "DISABLE": case "disable": case "PLAINTEXT": return pill(m, "bad");
      default: return pill(m || "?");
    }
  }

  function policyList(policies) {
    return h("ul", { class: "rules" }, policies.map((p) => h("li", null,
      pill(p.action, p.action === "DENY" ? "bad" : p.action === "ALLOW" ? "ok" : null), " ",
      h("b", { class: "mono" }, p.name), p.filter ? h("span", { class: "muted" }, " (" + p.filter + ")") : null,
      p.rules.length === 0 ? h("div", { class: "muted" }, "no rules: matches no request") :
        h("ul", null, p.rules.map((r) => h("li", { class: "mono" }, r))))));
  }

  // renderInbound shows the server side: identity, the TLS mode and
  // RBAC of each xDS inbound listener, the policy file and decisions.
  function renderInbound(inb) {
    const parts = [];
    parts.push(h("div", { class: "card" }, h("div", { class: "card-head" },
      h("h3", null, "identity"), h("span", { class: "mono", id: "inbound-identity" }, inb.identity || "none (no SPIFFE identity)"),
      modePill(inb.mtls), h("span", { class: "muted" }, "the mesh's own mode, for servers not under an xDS inbound listener"),
      h("div", { class: "rate" }, pill(`${inb.allowed} allowed`, "ok"), pill(`${inb.denied} denied`, inb.denied ? "bad" : null)))));
    for (const l of inb.listeners || []) {
      parts.push(h("div", { class: "card", "data-listener": l.name },
        h("div", { class: "card-head" }, h("h3", { class: "mono" }, l.address), pill(l.state, l.state === "ACTIVE" ? "ok" : l.state === "ERROR" ? "bad" : null),
          l.mode ? modePill(l.mode) : null, h("span", { class: "muted mono" }, l.name)),
        l.error ? h("div", { class: "error" }, l.error) : null,
        table(["filter chain", "matches", "transport", "routes", "RBAC"], (l.chains || []).map((c) => h("tr", null,
          h("td", { class: "mono" }, c.name || "–"), h("td", null, c.match), h("td", null, modePill(c.mtls)),
          h("td", { class: "mono" }, c.route_config || "–"),
          h("td", null, c.rbac && c.rbac.length ? policyList(c.rbac) : h("span", { class: "muted" }, "none: every request allowed")))),
        "no filter chains")));
    }
    if (inb.policy_file) {
      parts.push(h("div", { class: "card" }, h("div", { class: "card-head" }, h("h3", null, "authorization policy"),
        h("span", { class: "mono muted" }, inb.policy_file)),
        inb.policy_error ? h("div", { class: "error" }, "latest version refused, the previous one serves: " + inb.policy_error) : null,
        policyList(inb.policies || [])));
    }
    const rows = (inb.decisions || []).map((d) => h("tr", { class: d.allowed ? null : "decision-deny" },
      h("td", { class: "mono" }, new Date(d.time).toLocaleTimeString("en-GB")),
      h("td", null, d.allowed ? pill("ALLOW", "ok") : pill("DENY", "bad")),
      h("td", { class: "mono wrap" }, d.rule || (d.allowed ? "–" : "no policy allowed it")),
      h("td", { class: "mono wrap" }, d.peer || "–"),
      h("td", { class: "mono" }, d.protocol + " " + d.method),
      h("td", { class: "mono wrap" }, d.path),
      h("td", { class: "muted" }, d.engine === "xds_rbac" ? "xDS RBAC" : "policy file")));
    parts.push(h("div", { class: "card", id: "decisions" }, h("h3", null, "recent decisions ",
      h("span", { class: "muted" }, "(every denial; allowed requests sampled)")),
      table(["time", "decision", "rule", "peer", "method", "path", "by"], rows, "no authorization decision yet")));
    $("inbound").replaceChildren(...parts);
  }

  // Tap: /tap streams one JSON object a line while the request is open.
  // The page follows it only on demand, with the Follow button or #tap in
  // the URL: a stream that never ends would hold a request open for as
  // long as the page is, and a headless browser, waiting for the network
  // to settle, would never finish. #tap=3s follows for that long
  // (/tap?duration=3s), then stops. Another part of the admin endpoint
  // serves /tap; where it answers 404 the panel stays hidden.
  const TAP_ROWS = 200;
  let tapSeen = 0;
  let tapFollow = null; // the AbortController of the follow in progress; null while paused
  function tapRow(e) {
    const attempts = (e.attempts || []).map((a) => `${a.endpoint} ${a.status}${a.reason ? " (" + a.reason + ")" : ""}`).join("; ");
    const where = [e.route, e.cluster, e.endpoint].filter((x) => x).join(" → ");
    const authz = e.authz ? `${e.authz.decision}${e.authz.rule ? " " + e.authz.rule : ""}` : "";
    const bad = typeof e.status === "number" ? e.status >= 500 : e.status && e.status !== "OK";
    return h("tr", { class: "tap-new" },
      h("td", { class: "mono" }, e.time ? new Date(e.time).toLocaleTimeString("en-GB") : "–"),
      h("td", null, pill(e.direction || "?", e.direction === "inbound" ? "accent" : null)),
      h("td", null, e.protocol || ""),
      h("td", { class: "mono" }, e.method || ""),
      h("td", { class: "mono" }, e.authority || ""),
      h("td", { class: "mono wrap" }, e.path || ""),
      h("td", { class: "num" }, bad ? pill(String(e.status), "bad") : String(e.status ?? "")),
      h("td", { class: "num" }, fmtMs(e.latency_ms)),
      h("td", { class: "mono wrap" }, e.peer || ""),
      h("td", { class: "mono wrap" }, where),
      h("td", { class: "mono wrap" }, attempts),
      h("td", null, authz ? pill(authz, e.authz.decision === "deny" || e.authz.decision === "DENY" ? "bad" : "ok") : ""));
  }

  function tapState(text, kind, title) {
    const s = $("tap-state");
    s.textContent = text;
    s.className = "pill" + (kind ? " " + kind : "");
    s.title = title || "";
  }

  // sleep waits ms, or less if signal aborts.
  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  // readTap shows each line of resp as a row, newest first. It returns
  // true when the server ended the stream, false when it broke or the
  // follow was stopped.
  async function readTap(resp) {
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return true;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          let e;
          try { e = JSON.parse(line); } catch (_) { continue; }
          const body = $("tap");
          body.prepend(tapRow(e));
          while (body.children.length > TAP_ROWS) body.lastChild.remove();
          tapSeen++;
          $("tap-count").textContent = `${tapSeen} event${tapSeen === 1 ? "" : "s"} seen`;
        }
      }
    } catch (_) {
      return false;
    }
  }

  // tapDone ends the follow ctl, if it is still the current one, leaving
  // the state as it is.
  function tapDone(ctl) {
    if (tapFollow !== ctl) return;
    tapFollow = null;
    $("tap-follow").textContent = "Follow live requests";
  }

  function tapStop() {
    if (tapFollow) tapFollow.abort();
    tapDone(tapFollow);
    tapState("paused");
  }

  // follow streams /tap into the panel until stopped, reconnecting with
  // backoff; with a duration ("3s"), for that long only, as /tap's
  // duration= counts it (the browser's clock may be virtual).
  async function follow(duration) {
    if (tapFollow) tapFollow.abort();
    const ctl = new AbortController();
    tapFollow = ctl;
    $("tap-follow").textContent = "Stop following";
    tapState("connecting", "accent");
    const url = duration ? "tap?duration=" + encodeURIComponent(duration) : "tap";
    let delay = 1000;
    while (!ctl.signal.aborted) {
      let resp;
      try {
        resp = await fetch(url, { cache: "no-store", signal: ctl.signal });
      } catch (err) {
        if (ctl.signal.aborted) return;
        if (duration) { tapState("unreachable: stopped", "bad", err.message); tapDone(ctl); return; }
        tapState("unreachable, retrying", "bad", err.message);
        await sleep(delay, ctl.signal);
        delay = Math.min(delay * 2, 15000);
        continue;
      }
      if (!resp.ok || !resp.body) {
        const why = resp.ok ? "no body" : (await resp.text().catch(() => "")).trim();
        if (ctl.signal.aborted) return;
        // A bad query (a duration out of range) or a missing /tap does
        // not mend by asking again; nor is a timed follow's time kept
        // across attempts.
        if (duration || resp.status === 400 || resp.status === 404) {
          tapState(`HTTP ${resp.status}: ${why || "stopped"}`, "bad", why);
          tapDone(ctl);
          return;
        }
        tapState(`HTTP ${resp.status}, retrying`, "bad", why);
        await sleep(delay, ctl.signal);
        delay = Math.min(delay * 2, 15000);
        continue;
      }
      delay = 1000;
      tapState("streaming", "ok", duration ? "for " + duration : "until stopped");
      const ended = await readTap(resp);
      if (ctl.signal.aborted) return;
      if (duration) {
        if (ended) tapState(`stopped after ${duration}`);
        else tapState("the stream broke: stopped", "warn");
        tapDone(ctl);
        return;
      }
      tapState("reconnecting", "warn");
      await sleep(delay, ctl.signal);
    }
  }

  // tapHash is what the URL's hash asks of the tap: "" to follow until
  // stopped (#tap), a duration (#tap=3s), or null for nothing.
  function tapHash() {
    const m = /^#tap(?:=(.*))?$/.exec(location.hash);
    if (!m) return null;
    try { return m[1] ? decodeURIComponent(m[1]) : ""; } catch (_) { return m[1]; }
  }

  // tapInit shows the panel where /tap is served. The probe asks for a
  // stream of 1ms and drops it once answered: it costs the server one
  // subscription of a millisecond, and the page holds nothing open.
  async function tapInit() {
    let delay = 1000;
    for (;;) {
      const ctl = new AbortController();
      try {
        const resp = await fetch("tap?duration=1ms", { cache: "no-store", signal: ctl.signal });
        ctl.abort(); // the status is the answer; a server ignoring duration would stream on
        if (resp.status === 404) return; // no tap on this admin endpoint: the panel stays hidden
        break;
      } catch (_) {
        await sleep(delay);
        delay = Math.min(delay * 2, 15000);
      }
    }
    $("tap-section").hidden = false;
    tapState("paused");
    $("tap-follow").addEventListener("click", () => (tapFollow ? tapStop() : follow("")));
    const fromHash = () => { const d = tapHash(); if (d != null) follow(d); };
    window.addEventListener("hashchange", fromHash);
    fromHash();
  }

  function setStatus(ok, text) {
    $("status").className = "status " + (ok ? "live" : "down");
    $("status-text").textContent = text;
  }

  async function tick() {
    const paths = ["stats", "clusters", "routes", "config_dump?format=weft&resources=false", "inbound", "stats/golden"];
    const results = await Promise.allSettled(paths.map(getJSON));
    const [stats, clusters, routes, dump, inbound, golden] = results;
    const failed = results.filter((r) => r.status === "rejected");
    const val = (r) => (r.status === "fulfilled" ? r.value : null);
    try {
      const st = val(stats);
      if (st) { updateRates(st); renderHeader(st); }
      const xdsOn = st ? st.xds : false;
      if (val(clusters)) renderServices(val(clusters));
      if (val(routes)) renderRoutes(val(routes), xdsOn);
      if (val(dump)) renderXDS(val(dump), xdsOn);
      if (val(inbound)) renderInbound(val(inbound));
      if (val(golden)) renderGolden(val(golden));
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
  tapInit();
})();
