"""The C Avro codec against an independent reader: fastavro decodes every
fixture the C encoder writes, and re-encodes it to the very same bytes."""
import os
import subprocess
import sys

from conftest import ROOT


def test_fastavro_reads_what_c_writes(tmp_path):
    build = os.path.dirname(os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "bin")))
    env = dict(os.environ, CM_AVRO_DUMP_DIR=str(tmp_path))
    subprocess.run([os.path.join(build, "tests", "test_avro")], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fixtures = [f for f in os.listdir(tmp_path) if f.endswith(".bin")]
    assert len(fixtures) >= 10, fixtures
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "unit", "avro_check.py"),
                        str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(fixtures)} passed, 0 failed" in r.stdout, r.stdout
