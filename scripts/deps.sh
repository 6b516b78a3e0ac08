#!/usr/bin/env bash
# Installs what the build, the pipeline and the tests need, and nothing twice:
#   - Debian packages (C libraries, Redis, Java, Maven)
#   - the Apache Kafka broker jars from Maven Central into .cache/
#   - a Python virtualenv in .cache/venv for the test harnesses
# Usage: scripts/deps.sh [--no-python]
set -euo pipefail
. "$(dirname "$0")/lib.sh"

APT_PACKAGES=(
    build-essential pkg-config
    librdkafka-dev libhiredis-dev libmicrohttpd-dev libwebsockets-dev
    libjansson-dev libavro-dev libcurl4-openssl-dev libcmocka-dev
    zlib1g-dev liblz4-dev uthash-dev libssl-dev
    redis-server openjdk-17-jre-headless maven python3-venv curl
)
# The browser test drives Debian's Chromium (playwright-core from npm).
TEST_APT_PACKAGES=(chromium nodejs npm)

# apt_install_missing PACKAGE...: installs those not installed yet (node and
# npm count as present when on PATH, e.g. a Node.js not from Debian).
apt_install_missing() {
    local missing=() p
    for p in "$@"; do
        case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    say "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_install_missing "${APT_PACKAGES[@]}"

# Kafka: the real broker jars, fetched once.
if [ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
    mkdir -p "$KAFKA_LIBS.tmp"
    mkdir -p "$CACHE"
    mvn -q -B -Dstyle.color=never -f "$ROOT/tools/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp" >"$CACHE/mvn-kafka.log" 2>&1 ||
        die "Maven could not fetch the Kafka jars: $(tail -5 "$CACHE/mvn-kafka.log")"
    rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
fi

if [ "${1:-}" != "--no-python" ]; then
    apt_install_missing "${TEST_APT_PACKAGES[@]}"
    if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ]; then
        say "installing the browser test's npm packages"
        (cd "$ROOT/tests/browser" && npm ci --no-audit --no-fund --silent)
    fi
    VENV=$CACHE/venv
    REQ=$ROOT/tests/requirements.txt
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the test virtualenv in $VENV"
        python3 -m venv "$VENV"
    fi
    stamp=$VENV/.requirements.sha
    want=$(sha256sum "$REQ" | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "installing test requirements"
        "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ"
        echo "$want" >"$stamp"
    fi
fi
