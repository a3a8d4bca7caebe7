# failoverd container image: a static-ish release build on Debian bookworm, run as non-root.
# No registry is reachable from the development lab, so this file is not built in CI.
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin failoverd

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="failoverd" \
      org.opencontainers.image.description="Multi-region failover and health-probing daemon" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/failoverd"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/failoverd --shell /usr/sbin/nologin failoverd \
 && mkdir -p /var/lib/failoverd /etc/failoverd \
 && chown failoverd /var/lib/failoverd
COPY --from=build /src/target/release/failoverd /usr/local/bin/failoverd
USER 10001
VOLUME ["/var/lib/failoverd"]
# 7070: admin API and metrics; 7071: peer (consensus) traffic.
EXPOSE 7070 7071
ENTRYPOINT ["/usr/local/bin/failoverd"]
CMD ["run", "--config", "/etc/failoverd/failoverd.toml"]
