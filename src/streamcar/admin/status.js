// The live half of the status page (streamcar.admin.page): polls /status and rebuilds each pipeline's card with
// the markup render_page() produces on the server; keep the two in step, function by function.
// Every text shown goes through text nodes and setAttribute, never through HTML parsing: dead-letter keys and
// errors come from messages and services.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const KNOWN_KINDS = ["success", "drop", "dead-letter", "retry"];
  const SVG = "http://www.w3.org/2000/svg";
  const RATE_WINDOW_MS = 5000; // throughput is averaged over this much history, so one slow poll does not spike it
  const SPARK_POINTS = 60;
  const TIMEOUT_MS = 5000;
  const history = new Map(); // pipeline name -> {samples: [{t, consumed}], rates: [msg/s per poll]}
  let lastUpdate = null;
  let polls = 0;

  // -- building nodes ------------------------------------------------------------------------------------------
  function fill(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const el = (tag, attrs, ...children) => fill(document.createElement(tag), attrs, children);
  const svg = (tag, attrs, ...children) => fill(document.createElementNS(SVG, tag), attrs, children);

  // -- formatting (page.py: fmt, _percent, _clock) -------------------------------------------------------------
  const isInt = (n) => typeof n === "number" && Number.isInteger(n);
  const fmt = (n) => (isInt(n) ? n.toLocaleString("en-US") : "–");
  function percent(n, total) {
    if (!total) return "";
    const share = (100 * n) / total;
    return share >= 1 || share === 0 ? `${Math.round(share)}%` : "<1%";
  }
  const pad = (n) => String(n).padStart(2, "0");
  function clock(at) {
    if (typeof at !== "number") return "–";
    const d = new Date(at * 1000);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function iso(at) {
    if (typeof at !== "number") return null;
    const d = new Date(at * 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${clock(at)} UTC`;
  }
  function rateText(rate) {
    if (rate === null) return "–";
    return rate < 10 ? rate.toFixed(1) : Math.round(rate).toLocaleString("en-US");
  }

  // -- throughput ----------------------------------------------------------------------------------------------
  function observe(p, now) {
    let h = history.get(p.name);
    const consumed = isInt(p.consumed) ? p.consumed : 0;
    if (!h || (h.samples.length && consumed < h.samples[h.samples.length - 1].consumed)) {
      h = { samples: [], rates: [] }; // first sight, or the counters went back (the sidecar restarted)
      history.set(p.name, h);
    }
    const last = h.samples[h.samples.length - 1];
    h.samples.push({ t: now, consumed });
    if (last && now > last.t) {
      h.rates.push(((consumed - last.consumed) * 1000) / (now - last.t));
      if (h.rates.length > SPARK_POINTS) h.rates.shift();
    }
    while (h.samples.length > 2 && now - h.samples[1].t >= RATE_WINDOW_MS) h.samples.shift();
    const first = h.samples[0];
    return {
      rate: now > first.t ? ((consumed - first.consumed) * 1000) / (now - first.t) : null,
      rates: h.rates,
    };
  }

  function sparkline(rates) {
    const node = svg("svg", { class: "spark", viewBox: "0 0 60 20", preserveAspectRatio: "none", "aria-hidden": "true" });
    node.append(svg("line", { class: "base", x1: 0, y1: 19.5, x2: 60, y2: 19.5 }));
    if (!rates.length) return node;
    const max = Math.max(...rates, 1);
    const step = 60 / (SPARK_POINTS - 1);
    const points = rates.map((r, i) => {
      const x = 60 - (rates.length - 1 - i) * step;
      return [x, 19 - (17 * r) / max];
    });
    const line = points.map(([x, y]) => `${x.toFixed(2)},${y.toFixed(2)}`).join(" ");
    const x0 = points[0][0].toFixed(2);
    node.append(
      svg("polygon", { class: "area", points: `${x0},19.5 ${line} 60,19.5` }),
      svg("polyline", { class: "line", points: line }),
    );
    return node;
  }

  // -- one pipeline (page.py: card, health, tiles, results, partitions, dead_letters) -------------------------
  function card(p, speed) {
    const [level, badges, problems] = health(p);
    const call = p.call || {};
    return el(
      "section",
      { class: `card ${level}`.trim(), "data-pipeline": p.name },
      el(
        "div",
        { class: "card-head" },
        el(
          "div",
          null,
          el("h2", null, p.name),
          el("div", { class: "route" }, (p.topics || []).join(", "), el("span", { class: "arrow" }, " → "), call.url),
          el("div", { class: "meta" }, meta(p)),
        ),
        el("div", { class: "badges" }, badges.map(([c, text]) => el("span", { class: `badge ${c}` }, text))),
      ),
      problems.length ? el("ul", { class: "problems" }, problems.map(([c, text]) => el("li", { class: c || null }, text))) : null,
      tiles(p, speed),
      el("div", { class: "grid2" }, results(p), partitions(p)),
      deadLetters(p),
    );
  }

  function meta(p) {
    const call = p.call || {};
    const batch = (call.batch || {}).max_messages || 1;
    const out = ["group ", el("b", null, p.group), " · timeout ", el("b", null, call.timeout)];
    if (batch > 1) out.push(" · batches of ", el("b", null, batch));
    if (p.circuit_opened) out.push(" · circuit opened ", el("b", null, `${p.circuit_opened}×`));
    return out;
  }

  function health(p) {
    const badges = [];
    const problems = [];
    const circuit = p.circuit || "closed";
    if (p.kafka_error) {
      badges.push(["bad", "Kafka unreachable"]);
      problems.push(["", `Kafka does not answer: ${p.kafka_error}`]);
    }
    if ((p.topic_problems || []).length) {
      badges.push(["bad", "topic problem"]);
      for (const problem of p.topic_problems) problems.push(["", problem.charAt(0).toUpperCase() + problem.slice(1)]);
    }
    if (circuit !== "closed") {
      badges.push([circuit === "open" ? "bad" : "warn", `circuit ${circuit}`]);
      const reason = p.circuit_reason;
      problems.push([circuit === "open" ? "" : "warn", `Circuit ${circuit}` + (reason ? `: ${reason}` : "")]);
    }
    if (p.service_failing) badges.push(["bad", "service failing"]);
    if ((circuit !== "closed" || p.service_failing) && p.last_call_error) {
      problems.push(["", `Last call error: ${p.last_call_error}`]);
    }
    if (!badges.length) badges.push(["ok", "healthy"]);
    if (!(p.partitions || []).length) badges.push(["idle", "no partitions"]);
    const level = badges.some(([c]) => c === "bad") ? "failing" : badges.some(([c]) => c === "warn") ? "degraded" : "";
    return [level, badges, problems];
  }

  function tile(field, label, value, { alert = false, extra = null } = {}) {
    const classes = ["tile", field.replaceAll("_", "-")].concat(alert ? ["alert"] : []).join(" ");
    return el(
      "div",
      { class: classes, "data-field": field },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, value),
      extra,
    );
  }

  function tiles(p, speed) {
    const known = (p.partitions || []).length > 0;
    const dead = p.dead_lettered || 0;
    return el(
      "div",
      { class: "tiles" },
      tile("throughput", "Throughput", [rateText(speed.rate), el("span", { class: "unit" }, "msg/s")], {
        extra: sparkline(speed.rates),
      }),
      tile("lag", "Lag", known ? fmt(p.lag) : "–"),
      tile("in_flight", "In flight", fmt(p.in_flight)),
      tile("buffered", "Buffered", fmt(p.buffered)),
      tile("consumed", "Consumed", fmt(p.consumed)),
      tile("dead_lettered", "Dead-lettered", fmt(dead), { alert: dead > 0 }),
    );
  }

  const kindClass = (kind) => (KNOWN_KINDS.includes(kind) ? `k-${kind}` : "k-other");

  function orderedResults(results) {
    const rank = (kind) => (KNOWN_KINDS.includes(kind) ? KNOWN_KINDS.indexOf(kind) : KNOWN_KINDS.length);
    return Object.entries(results || {}).sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  }

  function results(p) {
    const counts = orderedResults(p.results);
    const total = counts.reduce((sum, [, n]) => sum + n, 0);
    const perMille = (n) => (total ? Math.round((1000 * n) / total) : 0);
    let done = 0;
    const rects = counts.map(([kind, n]) => {
      const x = perMille(done);
      done += n;
      return svg("rect", { class: kindClass(kind), x, y: 0, width: perMille(done) - x, height: 12 });
    });
    const legend = counts.map(([kind, n]) =>
      el(
        "li",
        { "data-kind": kind },
        el("span", { class: `swatch ${kindClass(kind)}` }),
        el("span", null, kind),
        el("span", { class: "n" }, fmt(n)),
        el("span", { class: "pct" }, percent(n, total)),
      ),
    );
    const minor = el(
      "div",
      { class: "minor" },
      ["published", "retries", "calls"].map((f) => el("span", { "data-field": f }, `${f} `, el("b", null, fmt(p[f])))),
    );
    return el(
      "div",
      { class: "panel results" },
      el("h3", null, "Results", el("span", { class: "count" }, fmt(total))),
      svg("svg", { class: "bar", viewBox: "0 0 1000 12", preserveAspectRatio: "none", "aria-hidden": "true" }, rects),
      legend.length ? el("ul", { class: "legend" }, legend) : el("div", { class: "none" }, "No results yet."),
      minor,
    );
  }

  function partitions(p) {
    const parts = p.partitions || [];
    const title = el("h3", null, "Partitions", el("span", { class: "count" }, parts.length));
    if (!parts.length) {
      return el("div", { class: "panel partitions" }, title, el("div", { class: "none" }, "No partitions assigned yet."));
    }
    const head = el(
      "tr",
      null,
      el("th", null, "Topic"),
      el("th", { class: "num c-part" }, "Partition"),
      el("th", { class: "num c-offset" }, "Next offset"),
      el("th", { class: "num c-lag" }, "Lag"),
    );
    const rows = parts.map((part) =>
      el(
        "tr",
        { "data-partition": `${part.topic}[${part.partition}]` },
        el("td", { class: "mono" }, part.topic),
        el("td", { class: "num" }, part.partition),
        el("td", { class: "num" }, fmt(part.next_offset)),
        el("td", { class: (part.lag || 0) > 0 ? "num lagging" : "num" }, fmt(part.lag)),
      ),
    );
    const table = el("table", null, el("thead", null, head), el("tbody", null, rows));
    return el("div", { class: "panel partitions" }, title, el("div", { class: "parts" }, table));
  }

  function deadLetters(p) {
    const recent = (p.recent_dead_letters || []).slice().reverse();
    const title = el("h3", null, "Recent dead letters", el("span", { class: "count" }, recent.length));
    if (!recent.length) return el("div", { class: "panel dlq" }, title, el("div", { class: "none" }, "None."));
    const head = el(
      "tr",
      null,
      el("th", { class: "c-time" }, "Time (UTC)"),
      el("th", { class: "c-source" }, "Source"),
      el("th", { class: "c-key" }, "Key"),
      el("th", { class: "c-kind" }, "Kind"),
      el("th", null, "Error"),
    );
    const rows = recent.map((d) =>
      el(
        "tr",
        { "data-offset": d.offset },
        el("td", { class: "mono", title: iso(d.at) }, clock(d.at)),
        el("td", { class: "mono" }, `${d.topic}[${d.partition}]@${d.offset}`),
        el("td", { class: "mono" }, d.key === null || d.key === undefined ? el("span", { class: "null" }, "null") : d.key),
        el("td", null, el("span", { class: "kind" }, d.kind)),
        el("td", { class: "error" }, el("span", { title: d.error }, d.error)),
      ),
    );
    const table = el("table", null, el("thead", null, head), el("tbody", null, rows));
    return el("div", { class: "panel dlq" }, title, table);
  }

  // -- updating the page in place ------------------------------------------------------------------------------
  // Only the parts that changed are replaced, so a selection (say, an error being copied) survives refreshes
  // that did not touch it.
  function sameAttributes(a, b) {
    if (a.attributes.length !== b.attributes.length) return false;
    for (const { name, value } of a.attributes) if (b.getAttribute(name) !== value) return false;
    return true;
  }

  function patch(old, next, depth) {
    if (old.isEqualNode(next)) return;
    const a = [...old.childNodes];
    const b = [...next.childNodes];
    const mismatch =
      depth === 0 ||
      old.nodeName !== next.nodeName ||
      a.length !== b.length ||
      !sameAttributes(old, next) ||
      a.some((n, i) => (n.nodeType !== Node.ELEMENT_NODE || b[i].nodeType !== Node.ELEMENT_NODE) && !n.isEqualNode(b[i]));
    if (mismatch) {
      old.replaceWith(next);
      return;
    }
    a.forEach((n, i) => patch(n, b[i], depth - 1));
  }

  function render(doc, now) {
    const pipelines = doc.pipelines || [];
    const cards = pipelines.map((p) => card(p, observe(p, now)));
    const main = document.getElementById("pipelines");
    const old = [...main.children];
    if (!cards.length) {
      main.replaceChildren(el("p", { class: "empty-page" }, "No pipelines."));
    } else if (old.length !== cards.length || old.some((c, i) => c.dataset.pipeline !== pipelines[i].name)) {
      main.replaceChildren(...cards);
    } else {
      old.forEach((c, i) => patch(c, cards[i], 4));
    }
    const ready = document.getElementById("ready");
    ready.className = `badge ${doc.ready ? "ok" : "bad"}`;
    ready.textContent = doc.ready ? "ready" : "not ready";
  }

  function show(state, text, problem) {
    document.body.dataset.state = state;
    document.body.dataset.polls = String(polls);
    document.getElementById("conn").textContent = text;
    const banner = document.getElementById("banner");
    banner.hidden = !problem;
    banner.textContent = problem || "";
  }

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    let doc;
    try {
      const response = await fetch(config.status_url, {
        cache: "no-store",
        headers: { Accept: "application/json" },
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      doc = await response.json();
    } catch (err) {
      const since = lastUpdate === null ? "" : ` Last update ${clock(lastUpdate / 1000)} UTC.`;
      const why = err && err.name === "AbortError" ? "no answer" : String((err && err.message) || err);
      const ready = document.getElementById("ready");
      ready.className = "badge idle";
      ready.textContent = "unknown";
      show("lost", "connection lost", `Connection lost (${why}), retrying…${since}`);
      return;
    } finally {
      clearTimeout(timer);
      setTimeout(poll, document.hidden ? config.refresh_ms * 5 : config.refresh_ms);
    }
    const now = Date.now();
    try {
      render(doc, now);
    } catch (err) {
      console.error(err);
      show("lost", "display error", `Could not display /status: ${err}`);
      return;
    }
    polls += 1;
    lastUpdate = now;
    show("live", `live · updated ${clock(now / 1000)} UTC`, null);
  }

  poll();
})();
