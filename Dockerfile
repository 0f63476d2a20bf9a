# Builds the switchyard binary (the web client is embedded in it) and runs it on the
# embedded default config. Ports: 7880/tcp (HTTP + signaling), 7882/udp (all media).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchyard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
USER switchyard
EXPOSE 7880/tcp 7882/udp
ENTRYPOINT ["/usr/local/bin/switchyard"]
