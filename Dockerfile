# The three Keyward binaries in one image; docker-compose.yml picks the
# command. Build: docker build -t keyward .
#
# Dependencies are built in a layer of their own (cargo-chef: a recipe of
# the manifests and lock file only), so a change to one source file
# rebuilds Keyward's crates, not the hundreds it depends on.
FROM lukemathwalker/cargo-chef:latest-rust-1-bookworm AS chef
WORKDIR /src

FROM chef AS plan
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=plan /src/recipe.json recipe.json
# How the bundled SQLite is compiled (LIBSQLITE3_FLAGS), before the
# dependencies are.
COPY .cargo .cargo
RUN cargo chef cook --release --locked --recipe-path recipe.json \
      -p keyward-api -p keyward-sync-worker -p keyward-ingestor
COPY . .
RUN cargo build --release --locked \
      -p keyward-api -p keyward-sync-worker -p keyward-ingestor

FROM debian:bookworm-slim
# ca-certificates: the system roots for https:// and amqps:// links;
# curl: the healthchecks' client of each binary's /healthz.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/keyward-api \
                  /src/target/release/keyward-sync-worker \
                  /src/target/release/keyward-ingestor /usr/local/bin/
# /run/keyward: provisioned secrets (a volume mounted there takes this
# owner, so the unprivileged user can write and read them).
RUN mkdir -p /run/keyward && chown 65534:65534 /run/keyward
# nobody: the binaries need no privileges and write nothing on PostgreSQL.
USER 65534:65534
ENV KEYWARD_LOG_FORMAT=json
# Each binary answers GET /healthz on its KEYWARD_LISTEN port; compose
# sets the command per service (docker-compose.yml).
