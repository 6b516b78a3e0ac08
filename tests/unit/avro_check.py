#!/usr/bin/env python3
"""Cross-check of the C Avro codec (libcommon/cm_avro.c) with fastavro.

The C side writes fixtures:

    CM_AVRO_DUMP_DIR=/tmp/avdump build/tests/test_avro

which leaves <name>.bin (Confluent wire bytes) and <name>.json ({"kind",
"record"}: what the C struct held, times as epoch ms, decimals as strings)
for every fixture. This script, for each pair:

  1. checks the header (magic 0, the built-in id of the kind);
  2. decodes the body with fastavro against schemas/<kind>.avsc and compares
     every field with the expectation (timestamp-millis -> datetime,
     decimal(18,6) -> Decimal, so the logical types are checked too);
  3. re-encodes the decoded record with fastavro and requires the very same
     bytes as the C encoder (so fastavro -> C is covered by test_avro's own
     decoding of those bytes).

Usage: tests/unit/avro_check.py DIR [SCHEMAS_DIR]
Prints "avro_check: N passed, N failed"; exit 1 on any failure.

       tests/unit/avro_check.py --embed
rewrites the schema texts embedded in libcommon/cm_avro.c (between the
BEGIN/END GENERATED SCHEMAS markers) from schemas/*.avsc, byte for byte;
test_avro fails until this is done after an .avsc change.
"""
import datetime
import decimal
import io
import json
import os
import re
import struct
import sys

BUILTIN_IDS = {"event": 1, "session": 2, "window_result": 3}
TIME_FIELDS = {"timestamp", "received_at", "start", "end", "window_start", "window_end"}
DECIMAL_FIELDS = {"price", "revenue"}
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def normalise(value, name=None):
    """fastavro's Python values -> the JSON form the C test wrote."""
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, datetime.datetime):
        return (value - EPOCH) // datetime.timedelta(milliseconds=1)
    if isinstance(value, decimal.Decimal):
        return value
    return value


def expected_form(value, name=None):
    if isinstance(value, dict):
        return {k: expected_form(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [expected_form(v) for v in value]
    if name in DECIMAL_FIELDS and isinstance(value, str):
        return decimal.Decimal(value)
    return value


def check(path_bin, path_json, schemas):
    with open(path_json, encoding="utf-8") as f:
        want = json.load(f)
    with open(path_bin, "rb") as f:
        wire = f.read()
    kind = want["kind"]
    schema = schemas[kind]
    if len(wire) < 5 or wire[0] != 0:
        return "bad magic or short header"
    (sid,) = struct.unpack(">I", wire[1:5])
    if sid != BUILTIN_IDS[kind]:
        return f"schema id {sid}, expected {BUILTIN_IDS[kind]}"
    body = io.BytesIO(wire[5:])
    got = fastavro.schemaless_reader(body, schema)
    if body.tell() != len(wire) - 5:
        return f"fastavro read {body.tell()} of {len(wire) - 5} body bytes"
    got_n = normalise(got)
    want_n = expected_form(want["record"])
    if got_n != want_n:
        diffs = [k for k in want_n if got_n.get(k) != want_n[k]]
        return f"fields differ: {diffs}: got {[got_n.get(k) for k in diffs]}"
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, got)
    if out.getvalue() != wire[5:]:
        return "fastavro re-encodes to different bytes"
    return None


def embed(root):
    """Regenerates the C string literals of the .avsc texts in cm_avro.c."""
    out = ["/* BEGIN GENERATED SCHEMAS */"]
    for kind in BUILTIN_IDS:
        with open(os.path.join(root, "schemas", f"{kind}.avsc"), encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
        out.append(f"static const char cm_schema_{kind}_json[] =")
        for i, line in enumerate(lines):
            esc = line.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            out.append(f'    "{esc}"' + (";" if i == len(lines) - 1 else ""))
    out.append("/* END GENERATED SCHEMAS */")
    path = os.path.join(root, "libcommon", "cm_avro.c")
    with open(path, encoding="utf-8") as f:
        src = f.read()
    pat = re.compile(r"/\* BEGIN GENERATED SCHEMAS \*/.*?/\* END GENERATED SCHEMAS \*/", re.S)
    new, n = pat.subn(lambda m: "\n".join(out), src)
    if n != 1:
        print(f"{path}: markers not found", file=sys.stderr)
        return 1
    if new != src:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
        print(f"rewrote the embedded schemas in {path}")
    else:
        print(f"{path} is up to date")
    return 0


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.argv[1:2] == ["--embed"]:
        return embed(os.path.join(here, "..", ".."))
    global fastavro
    import fastavro  # only the check needs it

    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    sdir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "..", "schemas")
    schemas = {}
    for kind in BUILTIN_IDS:
        with open(os.path.join(sdir, f"{kind}.avsc"), encoding="utf-8") as f:
            schemas[kind] = fastavro.parse_schema(json.load(f))
    names = sorted(n[:-5] for n in os.listdir(d) if n.endswith(".json"))
    passed = failed = 0
    for n in names:
        err = check(os.path.join(d, n + ".bin"), os.path.join(d, n + ".json"), schemas)
        if err:
            failed += 1
            print(f"FAIL {n}: {err}")
        else:
            passed += 1
            print(f"ok   {n}")
    if not names:
        print(f"no fixtures in {d}", file=sys.stderr)
    print(f"avro_check: {passed} passed, {failed} failed")
    return 1 if failed or not names else 0


if __name__ == "__main__":
    sys.exit(main())
