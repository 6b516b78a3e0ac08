// Benchmark of dashboard-ws: N concurrent WebSocket clients (default 1000)
// receive every change with a measured delay, while deliberately slow
// clients (one that never reads, with a tiny receive buffer, and one that
// reads a message every few seconds) are connected too.
//
// The change source is the aggregator's Redis layout written here directly
// (services/aggregator/README.md): every BENCH_TICK_MS the current minute's
// `events` of one source is set to a marker value k and a note is
// published, exactly as the aggregator flushes. A client's delay for k is
// the time from just before that write to the first message it receives
// that shows k (or a later marker: coalescing folds changes together, and a
// folded change counts as delivered when the message that carries it
// arrives).
//
// The dashboard-ws process's CPU seconds over the measured window (/proc
// utime + stime) and its VmHWM just before it is stopped go into the
// uniform "summary" of the report (unit: deliveries, one message reaching
// one client); the measured window is profiled with perf.
//
// Usage (bench/dashboard.sh runs it): node bench/dashboard.mjs
// env: REDIS_HOST, REDIS_PORT, BIN_DIR, BENCH_OUT (writes dashboard.json),
//      BENCH_WS_CLIENTS (1000), BENCH_SECONDS (30), BENCH_TICK_MS (500)
import { spawn, spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(path.join(ROOT, "tests/browser/package.json"));
const WebSocket = require("ws");

const N = Number(process.env.BENCH_WS_CLIENTS || 1000);
const SECONDS = Number(process.env.BENCH_SECONDS || 30);
const TICK_MS = Number(process.env.BENCH_TICK_MS || 500);
const REDIS_HOST = process.env.REDIS_HOST || "127.0.0.1";
const REDIS_PORT = Number(process.env.REDIS_PORT || 6379);
const BIN = process.env.BIN_DIR || path.join(ROOT, "build/bin");
const OUT = process.env.BENCH_OUT || path.join(ROOT, "bench/out");
const PREFIX = "bench:db" + process.pid;
const BASE = 1_000_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// /proc/<pid>/stat times are in clock ticks (USER_HZ)
const TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout) || 100;
// the delay from a Redis change to every client must stay under this at p99
const TARGET_P99_MS = 1000;
function procCpu(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const v = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (Number(v[11]) + Number(v[12])) / TCK;
}
function procHwm(pid) {
  const m = fs.readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmHWM:\s+(\d+) kB/m);
  return m ? Number(m[1]) * 1024 : null;
}
const profile = (...args) =>
  spawnSync("bash", [path.join(ROOT, "bench/_profile.sh"), ...args.map(String)], { stdio: "inherit" });
const now = () => performance.timeOrigin + performance.now();

/* ---------------------------------------------------- a tiny RESP client */
/* Every command used here answers one line (+OK, :n), so a reply is a line. */
function redisClient() {
  const sock = net.connect(REDIS_PORT, REDIS_HOST);
  const waiters = [];
  let buf = "";
  sock.setEncoding("utf8");
  sock.on("data", (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf("\r\n")) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const w = waiters.shift();
      if (w) (line[0] === "-" ? w.reject(new Error(line)) : w.resolve(line));
    }
  });
  const cmd = (...args) => new Promise((resolve, reject) => {
    waiters.push({ resolve, reject });
    let s = "*" + args.length + "\r\n";
    for (const a of args) {
      const v = String(a);
      s += "$" + Buffer.byteLength(v) + "\r\n" + v + "\r\n";
    }
    sock.write(s);
  });
  return new Promise((resolve, reject) => {
    sock.once("connect", () => resolve({ cmd, close: () => sock.end() }));
    sock.once("error", reject);
  });
}

/* -------------------------------------------------------------- server */
async function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function startDashboard(port) {
  const log = fs.openSync(path.join(OUT, "dashboard-ws.log"), "w");
  const p = spawn(path.join(BIN, "dashboard-ws"), [], {
    env: {
      ...process.env,
      DASHBOARD_PORT: String(port),
      DASHBOARD_ADDR: "127.0.0.1",
      REDIS_HOST, REDIS_PORT: String(REDIS_PORT),
      DASHBOARD_REDIS_PREFIX: PREFIX,
      DASHBOARD_MAX_CLIENTS: String(N + 100),
      LOG_LEVEL: "warn",
    },
    stdio: ["ignore", log, log],
  });
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`);
      if (r.status === 200) return p;
    } catch (e) { /* not up yet */ }
    await sleep(100);
  }
  p.kill("SIGKILL");
  throw new Error("dashboard-ws did not become ready");
}

/* ------------------------------------------------------------- clients */
function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main() {
  fs.mkdirSync(OUT, { recursive: true });
  const r = await redisClient();
  const port = await freePort();
  const minute = () => { const t = Date.now(); return t - (t % 60000); };
  let cur = minute();
  const base = `${PREFIX}:w:60000:`;
  async function write(k) {
    const b = base + cur;
    await Promise.all([
      r.cmd("ZADD", `${PREFIX}:win:60000`, cur, cur),
      r.cmd("SADD", b + ":src", "r0"),
      r.cmd("HSET", b + ":t:r0", "events", BASE + k, "page_views", k, "purchases", 0,
        "revenue_micros", 0, "sessions", 0, "session_ms_sum", 0, "bounces", 0, "conversions", 0,
        "final", 0, "wm", 0),
      r.cmd("EXPIRE", b + ":src", 3600),
      r.cmd("EXPIRE", b + ":t:r0", 3600),
    ]);
    await r.cmd("PUBLISH", `${PREFIX}:updates`,
      JSON.stringify({ ts: Date.now(), replica: "bench", full: false, windows: [[60000, cur]] }));
  }
  await write(0);
  const dash = await startDashboard(port);
  const url = `ws://127.0.0.1:${port}/ws`;

  const sent = new Map(); // k -> time just before the write
  const delays = [];
  let messages = 0, bytes = 0, opened = 0, closed = 0, gaps = 0;
  const clients = [];

  function onData(c, data) {
    const t = now();
    messages++;
    bytes += data.length;
    const m = JSON.parse(data);
    if (m.type === "update" && m.base !== c.seq) gaps++;
    c.seq = m.seq;
    let k = -1;
    for (const w of m.series) if (w.events >= BASE) k = Math.max(k, w.events - BASE);
    if (k < 0) return;
    for (let j = c.seen + 1; j <= k; j++) {
      const ts = sent.get(j);
      if (ts !== undefined && c.measuring) delays.push(t - ts);
    }
    if (k > c.seen) c.seen = k;
  }

  /* connect in batches so the handshakes do not all land at once */
  const t0 = now();
  for (let i = 0; i < N; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, N - i) }, () => new Promise((resolve) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      const c = { ws, seq: 0, seen: -1, measuring: false };
      clients.push(c);
      ws.on("open", () => { opened++; resolve(); });
      ws.on("message", (d) => onData(c, d.toString()));
      ws.on("close", () => closed++);
      ws.on("error", () => resolve());
    })));
  }
  const connectSecs = (now() - t0) / 1000;

  /* the slow ones: (1) a client with a 4 KiB receive buffer that never
   * reads after the handshake (python3 can set SO_RCVBUF before connect,
   * node cannot), so the server's socket fills and its queue overflows;
   * (2) a ws client that pauses its socket and reads a little every 3 s */
  const stuck = spawn("python3", ["-c", `
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", ${port}))
s.sendall(b"GET /ws HTTP/1.1\\r\\nHost: 127.0.0.1:${port}\\r\\nUpgrade: websocket\\r\\n"
          b"Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n"
          b"Sec-WebSocket-Version: 13\\r\\n\\r\\n")
print("connected", flush=True)
sys.stdin.read()
`], { stdio: ["pipe", "pipe", "inherit"] });
  await new Promise((res) => stuck.stdout.once("data", res));
  const trickle = new WebSocket(url, { perMessageDeflate: false });
  trickle.on("error", () => {});
  await new Promise((res) => trickle.once("open", res));
  trickle._socket.pause();
  const trickleTimer = setInterval(() => { trickle._socket.resume(); setTimeout(() => trickle._socket.pause(), 5); }, 3000);

  await sleep(1000); // everyone has the snapshot
  for (const c of clients) c.measuring = true;
  profile("start", "dashboard", dash.pid);
  const cpu0 = procCpu(dash.pid);
  const tMeasure = now();
  let k = 0;
  const end = now() + SECONDS * 1000;
  while (now() < end) {
    const t = minute();
    if (t !== cur) cur = t; // a new minute: the marker moves to its window
    k++;
    sent.set(k, now());
    await write(k);
    await sleep(TICK_MS);
  }
  await sleep(2000); // the last ones arrive
  clearInterval(trickleTimer);
  const cpuS = procCpu(dash.pid) - cpu0;
  const wallS = (now() - tMeasure) / 1000;
  profile("stop", "dashboard");

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const metric = (name) => {
    const m = metrics.match(new RegExp("^" + name.replace(/[{}"=]/g, (c) => "\\" + c) + " ([0-9.e+]+)$", "m"));
    return m ? Number(m[1]) : null;
  };
  const expected = clients.filter((c) => c.ws.readyState === WebSocket.OPEN).length * k;
  delays.sort((a, b) => a - b);
  const missed = clients.filter((c) => c.ws.readyState === WebSocket.OPEN && c.seen < k).length;
  const hwm = procHwm(dash.pid);
  const result = {
    summary: {
      unit: "deliveries", limit: null,
      input: `${N} WebSocket clients, a Redis change every ${TICK_MS} ms`,
      runs: [{ events: delays.length, wall_s: +wallS.toFixed(2), cpu_s: +cpuS.toFixed(2),
               peak_rss_bytes: hwm }],
    },
    clients: N, connected: opened, closed_early: closed, connect_seconds: +connectSecs.toFixed(2),
    changes: k, tick_ms: TICK_MS, seconds: SECONDS,
    deliveries: delays.length, expected_deliveries: expected, clients_missing_last_change: missed,
    delay_ms: {
      p50: +percentile(delays, 0.5).toFixed(1), p90: +percentile(delays, 0.9).toFixed(1),
      p99: +percentile(delays, 0.99).toFixed(1), max: +delays[delays.length - 1].toFixed(1),
    },
    messages_received: messages, bytes_received: bytes, base_gaps: gaps,
    server: {
      messages_sent_update: metric('dashboard_messages_sent_total{type="update"}'),
      messages_sent_snapshot: metric('dashboard_messages_sent_total{type="snapshot"}'),
      updates_coalesced: metric("dashboard_updates_coalesced_total"),
      updates_dropped: metric("dashboard_updates_dropped_total"),
      queue_overflows: metric("dashboard_queue_overflows_total"),
      clients_stalled: metric("dashboard_clients_stalled_total"),
    },
    slow_clients: "1 never reading (tiny receive buffer), 1 reading every 3 s",
    target_delay_p99_ms: TARGET_P99_MS,
    pass: percentile(delays, 0.99) <= TARGET_P99_MS && missed === 0 && opened >= N,
  };
  fs.writeFileSync(path.join(OUT, "dashboard.json"), JSON.stringify(result, null, 2) + "\n");
  console.log(JSON.stringify(result, null, 2));

  for (const c of clients) c.ws.terminate();
  trickle.terminate();
  stuck.kill();
  dash.kill("SIGTERM");
  r.close();
  process.exit(result.pass ? 0 : 1);
}

main().catch((e) => { console.error(e); process.exit(2); });
