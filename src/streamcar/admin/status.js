// The live half of the status page (streamcar.admin.page): polls /status and rebuilds each pipeline's card with
// the markup render_page() produces on the server; keep the two in step, function by function.
// Every text shown goes through text nodes and setAttribute, never through HTML parsing: dead-letter keys and
// errors come from messages and services.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const KNOWN_KINDS = ["success", "drop", "dead-letter", "retry"];
  const SHOWN_STATES = { stalled: "stalled", "partly-stalled": "partly stalled", aborting: "aborting" };
  const LEVELS = { stalled: "bad", "partly-stalled": "warn", aborting: "bad" };
  const SVG = "http://www.w3.org/2000/svg";
  const SLICES = 60; // streamcar.admin.window.SLICES: points of a trend
  const TIMEOUT_MS = 5000;
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

  // -- formatting (html.py: fmt, fixed, rate_text, seconds_text, percent, clock, iso, duration_text) ----------
  const isInt = (n) => typeof n === "number" && Number.isInteger(n);
  const isNum = (n) => typeof n === "number";
  const fmt = (n) => (isInt(n) ? n.toLocaleString("en-US") : "–");
  function fixed(x, digits) {
    const scale = 10 ** digits;
    return (Math.floor(x * scale + 0.5) / scale).toFixed(digits);
  }
  function rateText(rate) {
    if (!isNum(rate)) return "–";
    return rate < 10 ? fixed(rate, 1) : Math.floor(rate + 0.5).toLocaleString("en-US");
  }
  function secondsText(s) {
    if (!isNum(s)) return "–";
    if (s < 0.001) return `${Math.floor(s * 1000000 + 0.5)} µs`;
    if (s < 0.01) return `${fixed(s * 1000, 1)} ms`;
    if (s < 1) return `${Math.floor(s * 1000 + 0.5)} ms`;
    return s < 10 ? `${fixed(s, 2)} s` : `${fixed(s, 1)} s`;
  }
  function percent(n, total) {
    if (!total) return "";
    const share = (100 * n) / total;
    return share >= 1 || share === 0 ? `${Math.round(share)}%` : "<1%";
  }
  const perMille = (n, total) => (total ? Math.floor((2000 * n + total) / (2 * total)) : 0);
  const pad = (n) => String(n).padStart(2, "0");
  function clock(at) {
    if (!isNum(at)) return "–";
    const d = new Date(at * 1000);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function iso(at) {
    if (!isNum(at)) return null;
    const d = new Date(at * 1000);
    return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${clock(at)} UTC`;
  }
  function durationText(seconds) {
    if (!isInt(seconds) || seconds < 0) return "–";
    const days = Math.floor(seconds / 86400);
    const hours = Math.floor((seconds % 86400) / 3600);
    const minutes = Math.floor((seconds % 3600) / 60);
    const secs = seconds % 60;
    if (days) return `${days}d ${hours}h`;
    if (hours) return `${hours}h ${minutes}m`;
    return minutes ? `${minutes}m ${secs}s` : `${secs}s`;
  }

  // -- the header (page.py: about) -----------------------------------------------------------------------------
  function about(doc) {
    const started = doc.started_at;
    return [
      el("span", null, "v", doc.version || "–"),
      doc.host ? el("span", null, doc.host) : null,
      el("span", { title: iso(started) ? `started ${iso(started)}` : null }, "up ", durationText(doc.uptime_s)),
    ];
  }

  // -- one pipeline (page.py: card, health, topics; panels.py: tiles, sparkline, results, partitions, ...) ----
  function card(p) {
    const [level, badges, problems] = health(p);
    const call = p.call || {};
    const outputs = p.publish_topic ? [el("span", { class: "arrow" }, " → "), p.publish_topic] : [];
    return el(
      "section",
      { class: `card ${level}`.trim(), "data-pipeline": p.name, "data-state": p.state },
      el(
        "div",
        { class: "card-head" },
        el(
          "div",
          null,
          el("h2", null, p.name),
          el("div", { class: "route" }, (p.topics || []).join(", "), el("span", { class: "arrow" }, " → "), call.url, outputs),
          el("div", { class: "meta" }, meta(p)),
          el("div", { class: "meta topics" }, topics(p)),
        ),
        el("div", { class: "badges" }, badges.map(([c, text]) => el("span", { class: `badge ${c}` }, text))),
      ),
      problems.length ? el("ul", { class: "problems" }, problems.map(([c, text]) => el("li", { class: c || null }, text))) : null,
      tiles(p),
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

  function topics(p) {
    const out = [];
    const publish = p.publish_topic;
    if (publish) {
      out.push("publishes to ", el("b", { class: "topic" }, publish));
      const allow = p.publish_allow || [];
      if (allow.length && !(allow.length === 1 && allow[0] === publish)) {
        out.push(" (may route to ", el("span", { class: "topic" }, allow.join(", ")), ")");
      }
    } else {
      out.push("publishes nothing");
    }
    const routed = p.routed || [];
    if (routed.length) {
      out.push(" · last minute: ");
      routed.forEach((r, i) => out.push(i ? ", " : null, el("span", { class: "topic" }, r.topic), ` ${rateText(r.per_s)}/s`));
    }
    const dead = p.dead_letter_topic;
    if (dead) out.push(" · dead letters to ", el("b", { class: "topic" }, dead));
    else out.push(" · no dead-letter topic");
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
    const state = p.state || "";
    if (Object.hasOwn(SHOWN_STATES, state)) {
      const level = LEVELS[state];
      const shown = SHOWN_STATES[state];
      badges.push([level, shown]);
      const reason = String(p.state_reason || "");
      problems.push([level === "bad" ? "" : "warn", `${shown.charAt(0).toUpperCase()}${shown.slice(1)}: ${reason}`]);
    }
    if (!badges.length) badges.push(["ok", "healthy"]);
    if (!(p.partitions || []).length) badges.push(["idle", "no partitions"]);
    const level = badges.some(([c]) => c === "bad") ? "failing" : badges.some(([c]) => c === "warn") ? "degraded" : "";
    return [level, badges, problems];
  }

  function tile(field, label, value, { alert = false, sub = null, extra = null } = {}) {
    const classes = ["tile", field.replaceAll("_", "-")].concat(alert ? ["alert"] : []).join(" ");
    const hasSub = Array.isArray(sub) ? sub.length > 0 : Boolean(sub);
    return el(
      "div",
      { class: classes, "data-field": field },
      el("div", { class: "label" }, label),
      el("div", { class: "value" }, value),
      extra,
      hasSub ? el("div", { class: "sub" }, sub) : null,
    );
  }

  const windowOf = (p, name) => (p.rates || {})[name] || {};
  const perS = (p, name, counter) => (windowOf(p, name).per_s || {})[counter];

  // " · limit 24 (auto)" beside an adaptive max_in_flight, and the rate limit if there is one (as panels.py)
  function limitText(p) {
    const found = [];
    if (p.concurrency_limit !== null && p.concurrency_limit !== undefined) {
      found.push(" · limit ", el("b", { "data-field": "concurrency_limit" }, fmt(p.concurrency_limit)), " (auto)");
    }
    if (p.rate_limit && p.rate_limit.rate) found.push(` · at most ${p.rate_limit.rate}`);
    return found;
  }

  function tiles(p) {
    const known = (p.partitions || []).length > 0;
    const trend = p.trend || {};
    const latency = (p.latency || {})["10s"] || {};
    const minute = (p.latency || {})["1m"] || {};
    const recentDead = (windowOf(p, "1m").count || {}).dead_lettered;
    const groups = p.dead_letter_groups || [];
    const lastDead = groups.length ? Math.max(...groups.map((g) => g.last_at || 0)) : null;
    const stuck = (p.stuck || []).length;
    return el(
      "div",
      { class: "tiles" },
      tile("throughput", "Throughput", [rateText(perS(p, "10s", "consumed")), el("span", { class: "unit" }, "msg/s")], {
        sub: ["1 min ", el("b", null, rateText(perS(p, "1m", "consumed"))), "/s · ", fmt(p.consumed), " consumed"],
        extra: sparkline([trend.consumed || []], 1),
      }),
      tile("latency", "Call latency p99", secondsText(latency.p99), {
        sub: ["p50 ", el("b", null, secondsText(latency.p50)), " · 1 min p99 ", secondsText(minute.p99)],
        extra: sparkline([trend.p50 || [], trend.p99 || []], 0.001),
      }),
      tile("lag", "Lag", known ? fmt(p.lag) : "–", {
        sub: stuck ? `${stuck} partition${stuck !== 1 ? "s" : ""} stuck` : null,
        extra: sparkline([trend.lag || []], 1),
      }),
      tile("in_flight", "In flight", fmt(p.in_flight), { sub: [fmt(p.buffered), " buffered", ...limitText(p)] }),
      tile("dead_lettered", "Dead letters / min", fmt(recentDead), {
        alert: isInt(recentDead) && recentDead > 0,
        sub: [fmt(p.dead_lettered), " total", lastDead ? ` · last ${clock(lastDead)}` : null],
      }),
    );
  }

  function sparkline(series, floor) {
    const values = series.flat().filter((v) => v !== null && v !== undefined);
    const top = Math.max(...values, floor);
    const step = 60 / (SLICES - 1);
    const drawn = [svg("line", { class: "base", x1: 0, y1: 19.5, x2: 60, y2: 19.5 })];
    series.forEach((line, index) => {
      let segments = [[]];
      line.forEach((v, i) => {
        if (v === null || v === undefined) {
          segments.push([]);
          return;
        }
        const x = 60 - (line.length - 1 - i) * step;
        segments[segments.length - 1].push(`${fixed(x, 2)},${fixed(19 - (17 * v) / top, 2)}`);
      });
      segments = segments.filter((s) => s.length);
      if (index === 0 && segments.length === 1 && segments[0].length === line.length && line.length > 1) {
        const x0 = segments[0][0].split(",")[0];
        drawn.push(svg("polygon", { class: "area", points: `${x0},19.5 ${segments[0].join(" ")} 60,19.5` }));
      }
      for (const points of segments) {
        const shown = points.length === 1 ? points.concat(points) : points;
        drawn.push(svg("polyline", { class: `line l${index}`, points: shown.join(" ") }));
      }
    });
    return svg("svg", { class: "spark", viewBox: "0 0 60 20", preserveAspectRatio: "none", "aria-hidden": "true" }, drawn);
  }

  const kindClass = (kind) => (KNOWN_KINDS.includes(kind) ? `k-${kind}` : "k-other");

  function orderedResults(results) {
    const rank = (kind) => (KNOWN_KINDS.includes(kind) ? KNOWN_KINDS.indexOf(kind) : KNOWN_KINDS.length);
    return Object.entries(results || {}).sort(([a], [b]) => rank(a) - rank(b) || (a < b ? -1 : a > b ? 1 : 0));
  }

  const MINOR = [["published", "published"], ["retries", "retries"], ["calls", "calls"]];
  const RATES = [["published", "published"], ["retries", "retries"], ["call_errors", "call errors"]];

  function results(p) {
    const counts = orderedResults(p.results);
    const total = counts.reduce((sum, [, n]) => sum + n, 0);
    let done = 0;
    const rects = counts.map(([kind, n]) => {
      const x = perMille(done, total);
      done += n;
      return svg("rect", { class: kindClass(kind), x, y: 0, width: perMille(done, total) - x, height: 12 });
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
      MINOR.map(([f, label]) => el("span", { "data-field": f }, `${label} `, el("b", null, fmt(p[f])))),
    );
    const rates = el(
      "div",
      { class: "minor rates" },
      "last 10 s: ",
      RATES.map(([f, label]) => el("span", { "data-rate": f }, `${label} `, el("b", null, rateText(perS(p, "10s", f))), "/s")),
    );
    return el(
      "div",
      { class: "panel results" },
      el("h3", null, "Results", el("span", { class: "count" }, fmt(total))),
      svg("svg", { class: "bar", viewBox: "0 0 1000 12", preserveAspectRatio: "none", "aria-hidden": "true" }, rects),
      legend.length ? el("ul", { class: "legend" }, legend) : el("div", { class: "none" }, "No results yet."),
      minor,
      rates,
    );
  }

  function partitions(p) {
    const parts = p.partitions || [];
    const title = el("h3", null, "Partitions", el("span", { class: "count" }, parts.length));
    if (!parts.length) {
      return el("div", { class: "panel partitions" }, title, el("div", { class: "none" }, "No partitions assigned yet."));
    }
    const stuck = new Map((p.stuck || []).map((s) => [`${s.topic}[${s.partition}]`, s.for_s]));
    const head = el(
      "tr",
      null,
      el("th", null, "Topic"),
      el("th", { class: "num c-part" }, "Partition"),
      el("th", { class: "num c-offset" }, "Next offset"),
      el("th", { class: "num c-lag" }, "Lag"),
    );
    const rows = parts.map((part) => {
      const name = `${part.topic}[${part.partition}]`;
      return el(
        "tr",
        { "data-partition": name, class: stuck.has(name) ? "stuck" : null },
        el("td", { class: "mono" }, part.topic),
        el("td", { class: "num" }, part.partition),
        el("td", { class: "num" }, fmt(part.next_offset)),
        el(
          "td",
          { class: (part.lag || 0) > 0 ? "num lagging" : "num", title: stuck.has(name) ? `stuck for ${stuck.get(name)} s` : null },
          fmt(part.lag),
        ),
      );
    });
    const table = el("table", null, el("thead", null, head), el("tbody", null, rows));
    return el("div", { class: "panel partitions" }, title, el("div", { class: "parts" }, table));
  }

  function deadLetters(p) {
    const groups = p.dead_letter_groups || [];
    const title = el("h3", null, "Dead letters by kind and error", el("span", { class: "count" }, groups.length));
    if (!groups.length) return el("div", { class: "panel dlq" }, title, el("div", { class: "none" }, "None."));
    const head = el(
      "tr",
      null,
      el("th", { class: "c-time" }, "Last (UTC)"),
      el("th", { class: "c-kind" }, "Kind"),
      el("th", null, "Error"),
      el("th", { class: "num c-count" }, "Count"),
      el("th", { class: "c-source" }, "Last one"),
    );
    const rows = groups.map((g) => {
      const sample = g.sample || {};
      const key = sample.key;
      return el(
        "tr",
        { "data-kind": g.kind },
        el("td", { class: "mono", title: iso(g.last_at) }, clock(g.last_at)),
        el("td", null, el("span", { class: "kind" }, g.kind)),
        el("td", { class: "error" }, el("span", { title: g.error }, g.error)),
        el("td", { class: "num", title: `since ${clock(g.first_at)} UTC` }, fmt(g.count)),
        el(
          "td",
          { class: "mono" },
          el("span", { class: "source" }, `${sample.topic}[${sample.partition}]@${sample.offset}`),
          " key ",
          key === null || key === undefined ? el("span", { class: "null" }, "null") : el("span", { class: "key" }, key),
        ),
      );
    });
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

  function render(doc) {
    const pipelines = doc.pipelines || [];
    const cards = pipelines.map((p) => card(p));
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
    const header = document.getElementById("about");
    patch(header, el("div", { id: "about", class: "about" }, about(doc)), 2);
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
      render(doc);
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
