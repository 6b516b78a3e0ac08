"""The dashboard in a real browser against the real stack: the load generator
feeds the ingest gateway, the sessionizer and the aggregator write Redis,
dashboard-ws serves the page; tests/browser/dashboard.spec.mjs
(playwright-core + Debian's Chromium) checks that the page's figures move,
then reports what it shows once they settle; this test checks those numbers
against Redis (read here independently, following the aggregator's layout)
and keeps tests/artifacts/dashboard.png.

Needs /usr/bin/chromium (apt-get install chromium) and node; the npm
packages of tests/browser are installed when missing.
"""
import json
import os
import shutil
import subprocess
import time

import pytest
import redis

from conftest import ARTIFACTS, ROOT, bin_path, create_topics, free_port

BROWSER_DIR = os.path.join(ROOT, "tests", "browser")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
W = 60000



def need_browser():
    if not shutil.which("node"):
        pytest.fail("node is not installed (scripts/deps.sh installs what the tests need)")
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} missing (scripts/deps.sh installs Debian's chromium)")
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "playwright-core")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=BROWSER_DIR,
                       check=True, timeout=300)


def redis_truth(r, prefix, frm, to):
    """What the page must show for [frm, to), from Redis alone."""
    wins = {}
    hlls = []
    dims = {"top_urls": {}, "device_type": {}, "country": {}, "category": {}, "event_type": {}}
    dim_key = {"top_urls": "url", "device_type": "device_type", "country": "country",
               "category": "category", "event_type": "event_type"}
    for start in range(frm, to, W):
        base = f"{prefix}:w:{W}:{start}"
        tot = {}
        for sid in sorted(x.decode() for x in r.smembers(base + ":src")):
            for k, v in r.hgetall(f"{base}:t:{sid}").items():
                tot[k.decode()] = tot.get(k.decode(), 0) + int(v)
            for d, rk in dim_key.items():
                for k, v in r.hgetall(f"{base}:d:{rk}:{sid}").items():
                    dims[d][k.decode()] = dims[d].get(k.decode(), 0) + int(v)
            if sid.startswith("r"):
                hlls.append(f"{base}:u:{sid}")
        wins[start] = tot
    g = lambda k: sum(w.get(k, 0) for w in wins.values())  # noqa: E731
    cur = wins.get(to - 2 * W, {})
    ses = g("sessions")
    top = {d: sorted(((k, v) for k, v in c.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))[:10]
           for d, c in dims.items()}
    return {
        "unique_users": r.pfcount(*hlls) if hlls else 0,
        "revenue": g("revenue_micros") / 1e6,
        "events_per_s": cur.get("events", 0) / 60,
        "page_views_per_min": cur.get("page_views", 0),
        "avg_session_ms": g("session_ms_sum") // ses if ses else 0,
        "bounce_rate": g("bounces") / ses if ses else 0,
        "conversion_rate": g("conversions") / ses if ses else 0,
        "events": g("events"),
        "late": g("late"),
        "late_rate": g("late") / (g("events") + g("late")) if g("events") + g("late") else 0,
        "series": {s: (w.get("events", 0), w.get("page_views", 0)) for s, w in wins.items()},
        "lists": top,
    }


def test_dashboard_in_browser(stack, procs, unique):
    need_browser()
    t = {k: f"db.{k}.{unique}" for k in ("raw", "ses", "metrics", "late", "agchg", "panes",
                                          "szchg")}
    create_topics(stack, f"{t['raw']}:4", f"{t['ses']}:2", f"{t['metrics']}:1", f"{t['late']}:1",
                  f"{t['agchg']}:4:compact", f"{t['panes']}:1", f"{t['szchg']}:4:compact")
    prefix = f"db:{unique}"
    kafka = {"KAFKA_BOOTSTRAP": stack["KAFKA_BOOTSTRAP"], "LOG_LEVEL": "info"}
    gw_port = free_port()
    gw = procs("ingest-gateway", {**kafka, "GATEWAY_PORT": gw_port, "GATEWAY_ADDR": "127.0.0.1",
                                  "GATEWAY_TOPIC": t["raw"],
                                  "GATEWAY_WRITE_KEYS": "browser:browser-test-key"})
    gw.wait_http(f"http://127.0.0.1:{gw_port}/healthz")
    procs("sessionizer", {**kafka, "TOPIC_RAW": t["raw"], "TOPIC_SESSIONS": t["ses"],
                          "TOPIC_LATE": t["late"], "SESSIONIZER_CHANGELOG_TOPIC": t["szchg"],
                          "SESSIONIZER_GROUP_ID": f"sz-{unique}",
                          "SESSIONIZER_TRANSACTIONAL_ID": f"sz-{unique}",
                          "SESSIONIZER_IDLE_TIMEOUT": "3s", "ADMIN_PORT": free_port()})
    ag_port = free_port()
    ag = procs("aggregator", {
        **kafka, "REDIS_HOST": stack["REDIS_HOST"], "REDIS_PORT": stack["REDIS_PORT"],
        "TOPIC_RAW": t["raw"], "TOPIC_SESSIONS": t["ses"], "TOPIC_METRICS": t["metrics"],
        "TOPIC_LATE": t["late"], "AGGREGATOR_CHANGELOG_TOPIC": t["agchg"],
        "AGGREGATOR_PANES_TOPIC": t["panes"], "AGGREGATOR_GROUP_ID": f"ag-{unique}",
        "AGGREGATOR_INSTANCE_ID": f"ag-{unique}", "AGGREGATOR_REDIS_PREFIX": prefix,
        "AGGREGATOR_ADMIN_PORT": ag_port, "AGGREGATOR_IDLE_TIMEOUT": "3s"})
    ag.wait_http(f"http://127.0.0.1:{ag_port}/healthz", timeout=30)
    db_port = free_port()
    db = procs("dashboard-ws", {"REDIS_HOST": stack["REDIS_HOST"],
                                "REDIS_PORT": stack["REDIS_PORT"], "DASHBOARD_PORT": db_port,
                                "DASHBOARD_ADDR": "127.0.0.1", "DASHBOARD_REDIS_PREFIX": prefix})
    db.wait_http(f"http://127.0.0.1:{db_port}/readyz")

    # about 33 simulated minutes of a 2000-user shop, sent in ~40 s: the
    # last hour fills while the browser watches
    os.makedirs(ARTIFACTS, exist_ok=True)
    lg_log = open(os.path.join(ARTIFACTS, f"cs-loadgen-{unique}.log"), "wb")
    lg = subprocess.Popen([bin_path("cs-loadgen"), "--url", f"http://127.0.0.1:{gw_port}/v1/events",
                           "--key", "browser-test-key", "--count", "15000", "--rate", "400",
                           "--users", "2000", "--gap-ms", "60000", "--think-ms", "8000",
                           "--seed", "7", "--late", "0.03", "--progress", "0"], stdout=lg_log, stderr=lg_log)
    try:
        env = {**os.environ, "DASHBOARD_URL": f"http://127.0.0.1:{db_port}/",
               "SCREENSHOT": os.path.join(ARTIFACTS, "dashboard.png"),
               "RESULT_JSON": os.path.join(ARTIFACTS, "dashboard-page.json"),
               "QUIET_S": "6"}
        spec = subprocess.run(["node", os.path.join(BROWSER_DIR, "dashboard.spec.mjs")], env=env,
                              capture_output=True, text=True, timeout=400)
        print(spec.stdout, spec.stderr)
        assert lg.wait(120) == 0, "the load generator failed"
    finally:
        if lg.poll() is None:
            lg.kill()
        lg_log.close()
    assert spec.returncode == 0, spec.stdout + spec.stderr + db.tail()
    page = json.load(open(env["RESULT_JSON"]))
    assert os.path.getsize(env["SCREENSHOT"]) > 10000

    r = redis.Redis(host=stack["REDIS_HOST"], port=int(stack["REDIS_PORT"]))
    want = redis_truth(r, prefix, page["from"], page["to"])
    k = page["kpis"]
    assert want["events"] > 0
    assert k["unique_users"]["value"] == want["unique_users"]
    assert k["revenue"]["value"] == pytest.approx(want["revenue"], abs=1e-6)
    assert k["events_per_s"]["value"] == pytest.approx(want["events_per_s"])
    assert k["page_views_per_min"]["value"] == want["page_views_per_min"]
    assert k["avg_session_ms"]["value"] == want["avg_session_ms"]
    assert k["bounce_rate"]["value"] == pytest.approx(want["bounce_rate"])
    assert k["conversion_rate"]["value"] == pytest.approx(want["conversion_rate"])
    assert want["late"] > 0, "the load generator's late events were not counted in Redis"
    assert k["late_rate"]["value"] == pytest.approx(want["late_rate"])
    for s, ev, pv in page["series"]:
        assert (ev, pv) == want["series"][s], f"window {s}"
    for dim, rows in page["lists"].items():
        assert [tuple(x) for x in rows] == want["lists"][dim], dim
