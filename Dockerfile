# sluice in a container: `docker compose up` builds this.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p sluice

FROM debian:bookworm-slim
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
WORKDIR /var/lib/sluice
EXPOSE 8080
ENTRYPOINT ["sluice"]
CMD ["serve", "-c", "/etc/sluice/sluice.yaml"]
