# One image for every binary of the pipeline: the five services
# (ingest-gateway, sessionizer, aggregator, lake-writer, dashboard-ws) and the
# tools (cs-admin, cs-replay, cs-loadgen, cs-kperf). The container command
# picks the binary:
#
#   docker build -t clickstream:latest .
#   docker run --rm clickstream:latest sessionizer --help
#
# Settings come from environment variables only (docs/configuration.md); see
# docker-compose.yml and k8s/ for complete examples.
#
# Validated offline by tests/integration/test_deploy.py (the -dev packages of
# the build stage are the ones scripts/deps.sh installs; the runtime packages
# provide every shared library the binaries link).

ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------- build stage
FROM debian:${DEBIAN_RELEASE} AS build

# The C libraries of scripts/deps.sh (APT_PACKAGES), without the test-only
# ones (cmocka, Redis, Java, Maven, Python).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential pkg-config \
        librdkafka-dev libhiredis-dev libmicrohttpd-dev libwebsockets-dev \
        libjansson-dev libavro-dev libcurl4-openssl-dev \
        zlib1g-dev liblz4-dev uthash-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY Makefile ./
COPY libcommon/ libcommon/
COPY schemas/ schemas/
COPY services/ services/
COPY tools/ tools/
RUN make -j"$(nproc)" all \
 && ls -l build/bin/

# -------------------------------------------------------------- runtime stage
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

# Runtime libraries only: the sonames the binaries need (readelf -d) map to
# these packages on bookworm. curl is for the container health checks
# (GET /healthz); ca-certificates for TLS to Kafka / S3 / a schema registry.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        librdkafka1 libhiredis0.14 libmicrohttpd12 libwebsockets17 \
        libjansson4 libavro23 libcurl4 zlib1g liblz4-1 libssl3 \
        ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# Non-root user; the warehouse directory belongs to it so that a named volume
# mounted there (docker-compose.yml) starts writable.
RUN groupadd --system --gid 10001 clickstream \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/clickstream \
        --shell /usr/sbin/nologin clickstream \
 && mkdir -p /var/lib/clickstream/warehouse \
 && chown -R 10001:10001 /var/lib/clickstream

COPY --from=build /src/build/bin/ /usr/local/bin/

USER 10001:10001
WORKDIR /var/lib/clickstream
ENV LAKE_WAREHOUSE=/var/lib/clickstream/warehouse

# gateway, sessionizer, aggregator, lake-writer admin, dashboard
EXPOSE 8080 9102 9103 9104 3000

# No ENTRYPOINT: the command is the binary (and its arguments). The default
# only lists the settings of the gateway.
CMD ["ingest-gateway", "--help"]
