# The three Keyward binaries in one image; docker-compose.yml picks the
# command. Build: docker build -t keyward .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p keyward-api -p keyward-sync-worker -p keyward-ingestor

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/keyward-api \
                  /src/target/release/keyward-sync-worker \
                  /src/target/release/keyward-ingestor /usr/local/bin/
# nobody: the binaries need no privileges and write nothing on PostgreSQL.
USER 65534:65534
ENV KEYWARD_LOG_FORMAT=json
