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

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kafka: the real broker jars, fetched once.
if [ ! -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]; then
    say "fetching Apache Kafka $KAFKA_VERSION jars from Maven Central"
    mkdir -p "$KAFKA_LIBS.tmp"
    mvn -q -B -f "$ROOT/tools/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
        dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp" >/dev/null
    rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
fi

if [ "${1:-}" != "--no-python" ]; then
    missing=()
    for p in "${TEST_APT_PACKAGES[@]}"; do
        # node and npm may come from elsewhere than Debian (e.g. a preinstalled Node.js).
        case "$p" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages for the tests: ${missing[*]}"
        SUDO=""
        [ "$(id -u)" -ne 0 ] && SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
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
