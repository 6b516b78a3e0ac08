/*
 * The dashboard page: one WebSocket (/ws) that sends a snapshot, then
 * updates (README "Protocol"); charts drawn on <canvas>, no library, no CDN.
 *
 * State = the last snapshot with every update applied. An update carries
 * "base" = the seq it applies to; a gap means a message was lost, so the
 * page reconnects and starts again from a fresh snapshot.
 */
(function () {
  "use strict";

  const state = { seq: 0, from: 0, to: 0, windowMs: 60000, series: [], summary: null, status: null };
  const conn = { ws: null, retry: 0, timer: null, state: "connecting", lastMsg: 0 };
  window.__dashboard = { state: state, conn: conn };

  const $ = (id) => document.getElementById(id);
  const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const nf1 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  /* ------------------------------------------------------------ formats */

  function compact(n) {
    if (n === null || n === undefined || !isFinite(n)) return "–";
    const a = Math.abs(n);
    if (a >= 1e9) return nf1.format(n / 1e9) + "B";
    if (a >= 1e6) return nf1.format(n / 1e6) + "M";
    if (a >= 1e4) return nf1.format(n / 1e3) + "k";
    if (a >= 100 || Number.isInteger(n)) return nf0.format(n);
    return nf1.format(n);
  }
  function pct(r) { return r === null || r === undefined ? "n/a" : nf1.format(r * 100) + "%"; }
  function duration(ms) {
    if (!ms) return "0s";
    const s = Math.round(ms / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    return Math.floor(m / 60) + "h " + (m % 60) + "m";
  }
  function money(v) {
    if (Math.abs(v) >= 1e4) return compact(v);
    return nf2.format(v);
  }
  function hhmm(t) {
    const d = new Date(t);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }
  function hhmmss(t) {
    const d = new Date(t);
    return hhmm(t) + ":" + String(d.getSeconds()).padStart(2, "0");
  }
  function ago(t) {
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + "s ago";
    if (s < 3600) return Math.floor(s / 60) + "m ago";
    return hhmm(t);
  }

  /* ------------------------------------------------------------ render */

  function setKpi(name, raw, text) {
    const el = document.querySelector('.kpi[data-kpi="' + name + '"]');
    if (!el) return;
    const v = el.querySelector(".value");
    const val = raw === null || raw === undefined ? "" : String(raw);
    if (el.dataset.value !== val && el.dataset.value !== undefined && val !== "") {
      v.classList.add("flash");
      setTimeout(() => v.classList.remove("flash"), 60);
    }
    el.dataset.value = val;
    v.textContent = text;
    v.title = text;
  }

  function renderKpis() {
    const s = state.summary;
    if (!s) return;
    const cur = s.current || {};
    setKpi("events_per_s", cur.events_per_s ?? null, compact(cur.events_per_s ?? 0));
    setKpi("page_views_per_min", cur.page_views ?? null, compact(cur.page_views ?? 0));
    setKpi("unique_users", s.unique_users, compact(s.unique_users ?? 0));
    setKpi("sessions_per_min", s.sessions_per_min, compact(s.sessions_per_min));
    setKpi("avg_session_ms", s.avg_session_ms, duration(s.avg_session_ms));
    setKpi("bounce_rate", s.bounce_rate, pct(s.bounce_rate));
    setKpi("conversion_rate", s.conversion_rate, pct(s.conversion_rate));
    setKpi("revenue", s.revenue_micros / 1e6, money(s.revenue_micros / 1e6));
    setKpi("late_rate", s.late_rate, s.late_rate === null ? "n/a" : pct(s.late_rate));
    const lateEl = document.querySelector('.kpi[data-kpi="late_rate"] .sub');
    if (lateEl) lateEl.textContent = s.late === null ? "not reported" : compact(s.late) + " late events";
  }

  function renderList(dim) {
    const ol = $("bd-" + dim);
    if (!ol || !state.summary) return;
    const rows = state.summary[dim] || [];
    const max = rows.reduce((m, r) => Math.max(m, r[1]), 0) || 1;
    const frag = document.createDocumentFragment();
    if (!rows.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "no data yet";
      frag.appendChild(li);
    }
    for (const [k, n] of rows) {
      const li = document.createElement("li");
      li.dataset.key = k;
      li.dataset.value = String(n);
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = Math.max(1, (100 * n) / max) + "%";
      const key = document.createElement("span");
      key.className = "k";
      key.textContent = k === "" ? "(none)" : k;
      key.title = k;
      const val = document.createElement("span");
      val.className = "n";
      val.textContent = compact(n);
      li.append(bar, key, val);
      frag.appendChild(li);
    }
    ol.replaceChildren(frag);
  }

  /* A line chart of points [{t, v}] on a canvas; extra: a second series. */
  function drawChart(canvas, lines, fmt) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const muted = css.getPropertyValue("--muted").trim();
    const grid = css.getPropertyValue("--line").trim();
    const fontPx = Math.max(11, Math.round(parseFloat(getComputedStyle(document.documentElement).fontSize) * 0.85));
    g.font = fontPx + "px " + getComputedStyle(document.body).fontFamily;

    const padL = fontPx * 4, padR = 12, padT = 10, padB = fontPx * 2;
    const x0 = state.from, x1 = state.to - state.windowMs;
    let vmax = 0;
    for (const l of lines) for (const p of l.points) vmax = Math.max(vmax, p.v);
    const step = niceStep(vmax / 4 || 1);
    const top = Math.max(step * 4, step * Math.ceil(vmax / step));
    const X = (t) => padL + ((t - x0) / Math.max(1, x1 - x0)) * (w - padL - padR);
    const Y = (v) => padT + (1 - v / top) * (h - padT - padB);

    g.strokeStyle = grid;
    g.lineWidth = 1;
    g.fillStyle = muted;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let v = 0; v <= top + 1e-9; v += step) {
      const y = Math.round(Y(v)) + 0.5;
      g.beginPath();
      g.moveTo(padL, y);
      g.lineTo(w - padR, y);
      g.stroke();
      g.fillText(fmt(v), padL - 8, y);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    const tick = 10 * 60000;
    const half = g.measureText("00:00").width / 2;
    for (let t = Math.ceil(x0 / tick) * tick; t <= x1; t += tick)
      g.fillText(hhmm(t), Math.min(w - padR - half, Math.max(padL + half, X(t))), h - padB + 6);

    for (const l of lines) {
      const pts = l.points;
      if (!pts.length) continue;
      const done = pts.slice(0, -1), last = pts.slice(-2);
      if (l.fill && done.length > 1) {
        const grad = g.createLinearGradient(0, padT, 0, h - padB);
        grad.addColorStop(0, l.color + "55");
        grad.addColorStop(1, l.color + "00");
        g.fillStyle = grad;
        g.beginPath();
        g.moveTo(X(done[0].t), Y(0));
        for (const p of done) g.lineTo(X(p.t), Y(p.v));
        g.lineTo(X(done[done.length - 1].t), Y(0));
        g.closePath();
        g.fill();
      }
      g.strokeStyle = l.color;
      g.lineWidth = l.width || 2.5;
      g.lineJoin = "round";
      g.setLineDash([]);
      g.beginPath();
      done.forEach((p, i) => (i ? g.lineTo(X(p.t), Y(p.v)) : g.moveTo(X(p.t), Y(p.v))));
      g.stroke();
      /* the newest minute is still filling: dashed */
      if (last.length === 2) {
        g.setLineDash([4, 5]);
        g.beginPath();
        g.moveTo(X(last[0].t), Y(last[0].v));
        g.lineTo(X(last[1].t), Y(last[1].v));
        g.stroke();
        g.setLineDash([]);
      }
      const lp = done.length ? done[done.length - 1] : pts[0];
      g.fillStyle = l.color;
      g.beginPath();
      g.arc(X(lp.t), Y(lp.v), 4, 0, Math.PI * 2);
      g.fill();
    }
  }

  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  }

  function renderCharts() {
    const secs = state.windowMs / 1000;
    const ev = state.series.map((w) => ({ t: w.t, v: w.events / secs }));
    const pv = state.series.map((w) => ({ t: w.t, v: w.page_views }));
    const ss = state.series.map((w) => ({ t: w.t, v: w.sessions }));
    const c = getComputedStyle(document.documentElement);
    drawChart($("chart-events"), [{ points: ev, color: c.getPropertyValue("--c1").trim(), fill: true }], compact);
    drawChart($("chart-pageviews"), [{ points: pv, color: c.getPropertyValue("--c2").trim(), fill: true }], compact);
    drawChart($("chart-sessions"), [{ points: ss, color: c.getPropertyValue("--c3").trim(), fill: true }], compact);
  }

  function renderStatus() {
    const st = state.status || {};
    const stale = !!st.stale;
    document.body.classList.toggle("stale", stale);
    $("stale-banner").hidden = !stale;
    if (stale)
      $("stale-text").textContent = "The live store (Redis) is unreachable" +
        (st.stale_since ? " since " + hhmmss(st.stale_since) : "") + ".";
    if (conn.state === "live" || conn.state === "stale") setConn(stale ? "stale" : "live");
    $("range").textContent = state.from ? "last " + Math.round((state.to - state.from) / 60000) + " min · " +
      hhmm(state.from) + "–" + hhmm(state.to) : "last 60 min";
    renderUpdated();
  }

  function renderUpdated() {
    const st = state.status || {};
    $("updated").textContent = st.last_change ? "last change " + ago(st.last_change) :
      conn.lastMsg ? "received " + ago(conn.lastMsg) : "waiting for data…";
  }

  let frame = 0;
  function render() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      renderStatus();
      renderKpis();
      for (const d of ["top_urls", "device_type", "country", "category", "event_type"]) renderList(d);
      renderCharts();
    });
  }

  /* ------------------------------------------------------------ state */

  function applySnapshot(m) {
    state.seq = m.seq;
    state.from = m.from;
    state.to = m.to;
    state.windowMs = m.window_ms || 60000;
    state.series = (m.series || []).slice().sort((a, b) => a.t - b.t);
    state.summary = m.summary;
    state.status = m.status;
  }

  function applyUpdate(m) {
    const byT = new Map(state.series.map((w) => [w.t, w]));
    for (const w of m.series || []) byT.set(w.t, w);
    state.series = Array.from(byT.values()).filter((w) => w.t >= m.from && w.t < m.to).sort((a, b) => a.t - b.t);
    state.seq = m.seq;
    state.from = m.from;
    state.to = m.to;
    state.windowMs = m.window_ms || state.windowMs;
    state.summary = m.summary;
    state.status = m.status;
  }

  function onMessage(ev) {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    conn.lastMsg = Date.now();
    if (m.type === "snapshot") {
      applySnapshot(m);
    } else if (m.type === "update") {
      if (m.base !== state.seq) {
        /* a gap: start over from a fresh snapshot */
        conn.ws.close();
        return;
      }
      applyUpdate(m);
    } else {
      return;
    }
    conn.retry = 0;
    if (conn.state !== "live" && conn.state !== "stale") setConn(m.status && m.status.stale ? "stale" : "live");
    render();
  }

  /* ------------------------------------------------------- connection */

  function setConn(s, text) {
    conn.state = s;
    const el = $("conn");
    el.dataset.state = s;
    $("conn-text").textContent = text || { live: "Live", stale: "Stale data", connecting: "Connecting…", offline: "Offline" }[s];
  }

  function wsUrl() {
    const u = new URL("ws", location.href);
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    const token = new URLSearchParams(location.search).get("token");
    u.search = token ? "?token=" + encodeURIComponent(token) : "";
    return u.toString();
  }

  function connect() {
    clearTimeout(conn.timer);
    if (conn.state !== "offline") setConn("connecting");
    let ws;
    try { ws = new WebSocket(wsUrl()); } catch (e) { return scheduleReconnect(); }
    conn.ws = ws;
    ws.onmessage = onMessage;
    ws.onclose = () => { if (conn.ws === ws) scheduleReconnect(); };
    ws.onerror = () => { try { ws.close(); } catch (e) { /* closed */ } };
  }

  /* Backoff 0.5 s, 1 s, 2 s ... 5 s, with jitter, so that a wall of
   * screens does not reconnect in one burst after a server restart. */
  function scheduleReconnect() {
    conn.ws = null;
    const delay = Math.min(5000, 500 * Math.pow(2, conn.retry++)) * (0.75 + Math.random() * 0.5);
    const until = Date.now() + delay;
    setConn("offline", "Reconnecting…");
    clearTimeout(conn.timer);
    conn.timer = setTimeout(connect, delay);
    const tick = () => {
      if (conn.state !== "offline") return;
      const s = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      $("conn-text").textContent = s > 0 ? "Offline · retry in " + s + "s" : "Reconnecting…";
      if (s > 0) setTimeout(tick, 250);
    };
    tick();
  }

  window.addEventListener("resize", render);
  setInterval(renderUpdated, 1000);
  connect();
})();
