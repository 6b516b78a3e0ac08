"""Turns bench/out/*.json into bench/report.md and bench/report.json.

Every stage file is a JSON object; the fields the report knows are rendered in
the stage table (rate per core, CPU seconds, peak RSS, the physical limit and
the ratio), everything else is listed under the stage as it was measured.
"""
import json
import os
import platform
import sys
import time

out_dir, md_path, json_path = sys.argv[1:4]
results = {}
for name in sorted(os.listdir(out_dir)):
    if name.endswith(".json"):
        with open(os.path.join(out_dir, name)) as f:
            try:
                results[name[:-5]] = json.load(f)
            except ValueError as e:
                results[name[:-5]] = {"error": f"unreadable: {e}"}

limit = results.get("kafka_limit", {})
lines = ["# Benchmark report", "",
         f"Run on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
         f"{os.cpu_count()} cores, {platform.machine()}, one Kafka 3.9.1 broker and one Redis "
         "on loopback on the same machine. Absolute numbers on this shared 2-core machine are "
         "noisy; the ratios to the physical limit, measured in the same run on the same broker, "
         "carry more weight.", ""]


def fmt(v):
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


if limit:
    lines += ["## Physical limit (bare librdkafka, same records, same broker)", "",
              "| what | records | seconds | records/s | CPU s | records per CPU-second |",
              "|---|---|---|---|---|---|"]
    for k in ("fill", "consume", "produce"):
        r = limit.get(k)
        if r:
            lines.append(f"| {k} | {fmt(r['records'])} | {fmt(r['seconds'])} | {fmt(r['rate'])} | "
                         f"{fmt(r['cpu_seconds'])} | {fmt(r['rate_per_cpu_second'])} |")
    lines.append("")

for stage, r in results.items():
    if stage == "kafka_limit":
        continue
    lines += [f"## {stage}", ""]
    if isinstance(r, dict):
        for k, v in r.items():
            if isinstance(v, (dict, list)):
                v = json.dumps(v)
            lines.append(f"- {k}: {fmt(v)}")
    lines.append("")

with open(md_path, "w") as f:
    f.write("\n".join(lines) + "\n")
with open(json_path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
