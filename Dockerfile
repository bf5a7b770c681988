# syntax=docker/dockerfile:1.7
# The `faregate` binary in a small runtime image (every service is `faregate <subcommand>`).
#
#   docker build -t faregate:dev .
#   docker run --rm faregate:dev config show
#
# Stage 1 builds with the Debian toolchain librdkafka needs (rdkafka is built from its bundled
# sources with cmake, linked against the system OpenSSL and libcurl). Cargo's registry, git
# checkouts and the target directory live in BuildKit cache mounts, so a rebuild after a source
# change recompiles only Faregate's own crates. Stage 2 is debian-slim with the shared libraries
# the binary links (libssl3, libcurl4, zlib) and nothing else but CA roots and curl (for
# container health checks), running as an unprivileged user.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        cmake g++ make pkg-config libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# `cargo fetch` fills the registry cache mount (the only step that needs the network); the build
# then runs offline, and its target directory persists in a cache mount between builds.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    cargo fetch --locked
# No debug info in the image (the workspace's release profile keeps it for profiling); strip.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --offline -p faregate \
    && install -D -m 0755 target/release/faregate /out/faregate \
    && /out/faregate --version

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 zlib1g curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 faregate \
    && useradd --system --uid 10001 --gid faregate --home-dir /var/lib/faregate --create-home \
        --shell /usr/sbin/nologin faregate
COPY --from=build /out/faregate /usr/local/bin/faregate
# Inside a container the services must listen beyond loopback; everything else keeps its
# defaults and is set with FAREGATE__SECTION__KEY variables or a TOML file (FAREGATE_CONFIG).
ENV FAREGATE__INGRESS__LISTEN=0.0.0.0:8787 \
    FAREGATE__TELEMETRY__METRICS_LISTEN=0.0.0.0:9464 \
    FAREGATE__TELEMETRY__LOG_FORMAT=json
USER 10001:10001
WORKDIR /var/lib/faregate
# 8787: the ingress (LLM gateway and collector); 9464: /metrics, /health, /ready of every service.
EXPOSE 8787 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:9464/health || exit 1
# tini forwards SIGTERM to faregate (which drains within 30 s) and reaps zombies.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/faregate"]
CMD ["up"]
LABEL org.opencontainers.image.title="faregate" \
      org.opencontainers.image.description="Faregate: meter and govern AI traffic (ingress, processor, budget, admin CLI)" \
      org.opencontainers.image.licenses="Apache-2.0"
