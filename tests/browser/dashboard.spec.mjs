// Browser test of the dashboard: playwright-core drives Debian's Chromium
// (headless) against a running dashboard-ws.
//
//   DASHBOARD_URL=http://127.0.0.1:3000/ node tests/browser/dashboard.spec.mjs
//
// It asserts that the page goes live, that the figures on it change while
// the pipeline is fed, then waits until they settle and writes what the page
// shows (the raw values behind each figure, the breakdown rows and the
// window range) to RESULT_JSON, for the caller to check against Redis
// (tests/integration/test_dashboard_browser.py does), and saves a
// screenshot. Exit 0 on success, 1 on a failed assertion, 2 on an error.
//
// env: DASHBOARD_URL (required), SCREENSHOT (tests/artifacts/dashboard.png),
//      RESULT_JSON (tests/artifacts/dashboard-page.json), CHROMIUM
//      (/usr/bin/chromium), CHANGE_TIMEOUT_S (90), QUIET_S (5),
//      QUIET_TIMEOUT_S (120)
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = path.resolve(HERE, "..", "artifacts");
const URL_ = process.env.DASHBOARD_URL;
const SHOT = process.env.SCREENSHOT || path.join(ARTIFACTS, "dashboard.png");
const RESULT = process.env.RESULT_JSON || path.join(ARTIFACTS, "dashboard-page.json");
const CHANGE_TIMEOUT = Number(process.env.CHANGE_TIMEOUT_S || 90) * 1000;
const QUIET = Number(process.env.QUIET_S || 5) * 1000;
const QUIET_TIMEOUT = Number(process.env.QUIET_TIMEOUT_S || 120) * 1000;

const log = (...a) => console.log("[dashboard.spec]", ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Fail extends Error {}
function check(cond, msg) {
  if (!cond) throw new Fail(msg);
}

/* Everything the page shows, as the raw values behind the text. */
function readPage() {
  const kpis = {};
  for (const el of document.querySelectorAll(".kpi[data-kpi]")) {
    kpis[el.dataset.kpi] = {
      value: el.dataset.value === undefined || el.dataset.value === "" ? null : Number(el.dataset.value),
      text: el.querySelector(".value").textContent,
    };
  }
  const lists = {};
  for (const ol of document.querySelectorAll("ol.bars[data-dim]")) {
    lists[ol.dataset.dim] = Array.from(ol.querySelectorAll("li[data-key]")).map((li) => [
      li.dataset.key, Number(li.dataset.value)]);
  }
  const st = window.__dashboard.state;
  return {
    kpis, lists,
    conn: document.getElementById("conn").dataset.state,
    stale_banner: !document.getElementById("stale-banner").hidden,
    seq: st.seq, from: st.from, to: st.to,
    series: st.series.map((w) => [w.t, w.events, w.page_views]),
  };
}

const key = (p) => JSON.stringify([p.kpis, p.lists, p.series]);

async function main() {
  check(URL_, "DASHBOARD_URL is not set");
  fs.mkdirSync(path.dirname(SHOT), { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "db-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1920, height: 1080 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const errors = [];
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
    await page.goto(URL_);
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 30000 });
    log("live");

    /* the figures must move while the pipeline is fed */
    const first = await page.evaluate(readPage);
    let changed = null;
    const t0 = Date.now();
    while (Date.now() - t0 < CHANGE_TIMEOUT) {
      await sleep(1000);
      const now = await page.evaluate(readPage);
      if (key(now) !== key(first) && now.kpis.events_per_s.value !== null) {
        changed = now;
        break;
      }
    }
    check(changed, `the page did not change within ${CHANGE_TIMEOUT / 1000}s`);
    const moved = Object.keys(first.kpis).filter((k) => first.kpis[k].value !== changed.kpis[k].value);
    log("figures changed:", moved.join(", ") || "(series)", `seq ${first.seq} -> ${changed.seq}`);

    /* then settle: the same for QUIET ms */
    let last = changed, since = Date.now();
    const t1 = Date.now();
    while (Date.now() - since < QUIET) {
      check(Date.now() - t1 < QUIET_TIMEOUT, "the page never settled");
      await sleep(500);
      const now = await page.evaluate(readPage);
      if (key(now) !== key(last)) {
        last = now;
        since = Date.now();
      }
    }
    const shown = await page.evaluate(readPage);
    shown.changed_kpis = moved;
    shown.first_seq = first.seq;
    check(shown.conn === "live", `connection indicator says ${shown.conn}`);
    check(!shown.stale_banner, "the stale banner is shown");
    check(shown.kpis.unique_users.value > 0, "no unique users on the page");
    check(shown.lists.top_urls.length > 0, "no top URLs on the page");
    check(errors.length === 0, "errors in the page: " + errors.join("; "));
    fs.writeFileSync(RESULT, JSON.stringify(shown, null, 2) + "\n");
    await page.screenshot({ path: SHOT });
    log("screenshot:", SHOT);
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().then(() => process.exit(0)).catch((e) => {
  console.error("[dashboard.spec]", e instanceof Fail ? "FAIL:" : "ERROR:", e.message);
  process.exit(e instanceof Fail ? 1 : 2);
});
