"""Fixtures of the integration tests: a real Kafka broker and Redis, and the
project's binaries started as real processes.

The stack comes from scripts/test.sh (STACK_ENV names its stack.env); run
alone (`pytest tests/integration/test_x.py`), the tests start a stack of their
own in .run/pytest and stop it at the end.
"""
import os
import signal
import socket
import subprocess
import time
import urllib.request
import uuid

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("BIN_DIR", os.path.join(ROOT, "build", "bin"))
ARTIFACTS = os.path.join(ROOT, "tests", "artifacts")


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and "=" in line:
                k, v = line.split("=", 1)
                env[k] = v
    return env


@pytest.fixture(scope="session")
def stack():
    """{'KAFKA_BOOTSTRAP': 'host:port', 'REDIS_HOST': ..., 'REDIS_PORT': ...}"""
    path = os.environ.get("STACK_ENV")
    if path:
        yield read_env(path)
        return
    d = os.path.join(ROOT, ".run", "pytest")
    subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "start", d], check=True)
    try:
        yield read_env(os.path.join(d, "stack.env"))
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "stack.sh"), "stop", d], check=False)


def bin_path(name):
    p = os.path.join(BIN, name)
    if not os.path.exists(p):
        pytest.fail(f"binary {p} is missing: run make")
    return p


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def create_topics(stack, *specs):
    """specs: 'name:partitions[:compact]'."""
    subprocess.run([bin_path("cs-admin"), "create-topics", "-b", stack["KAFKA_BOOTSTRAP"], *specs],
                   check=True)


@pytest.fixture
def unique():
    """A short unique suffix for topic names, group ids and keys of one test."""
    return uuid.uuid4().hex[:10]


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Proc:
    """One of our binaries running as a real process, logs to a file."""

    def __init__(self, name, env, args=(), log_dir=None):
        self.name = name
        os.makedirs(log_dir or ARTIFACTS, exist_ok=True)
        self.log_path = os.path.join(log_dir or ARTIFACTS, f"{name}-{uuid.uuid4().hex[:6]}.log")
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update({k: str(v) for k, v in env.items()})
        self.p = subprocess.Popen([bin_path(name), *args], env=full_env, stdout=self.log,
                                  stderr=subprocess.STDOUT, start_new_session=True)

    def wait_http(self, url, want=200, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.p.returncode}: {self.tail()}")
            try:
                code, _ = http_get(url, timeout=1)
                if code == want:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: {url} did not answer {want} in {timeout}s: {self.tail()}")

    def kill9(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
            self.p.wait()

    def term(self, timeout=15):
        """SIGTERM; returns the exit code (SIGKILL after timeout, then AssertionError)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM")
        return self.p.returncode

    def tail(self, n=4000):
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")


@pytest.fixture
def procs():
    """Starts binaries; every one still running at the end of the test is killed."""
    started = []

    def start(name, env, args=()):
        p = Proc(name, env, args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill9()
        p.log.close()
        print(f"{p.name} log: {p.log_path}")  # shown for a failed test
