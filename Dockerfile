# wheelgate's container image: a build stage that compiles the release binary, and a small
# runtime stage (Debian slim, the CA bundle, the binary, the shipped proxy.toml) that runs it as
# an unprivileged user with the store on a volume.
#
#   docker build -t wheelgate .            # or: podman build / buildah bud -t wheelgate .
#   docker run -d -p 3141:3141 -v wheelgate-store:/var/lib/wheelgate \
#     -e WHEELGATE_UPSTREAM_URL=https://pypi-mirror.example.invalid/simple/ wheelgate
#
# The build downloads the crates listed in Cargo.lock (from the configured Cargo registry) and the
# two base images.
# The runtime image reads its configuration from $WHEELGATE_CONFIG (/etc/wheelgate/proxy.toml,
# the repository's proxy.toml; mount your own over it) and keeps its store in /var/lib/wheelgate.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Only what the build reads: the manifest (which names the benches), the lock file, the sources.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin wheelgate \
 && install -m 0755 target/release/wheelgate /usr/local/bin/wheelgate

FROM ${RUNTIME_IMAGE}
# ca-certificates: the operating system's trust store, which wheelgate trusts by default beside
# its built-in roots (a derived image can add a corporate CA with update-ca-certificates).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wheelgate \
 && useradd --system --uid 10001 --gid wheelgate --home-dir /var/lib/wheelgate --no-create-home \
      --shell /usr/sbin/nologin wheelgate \
 && install -d -o wheelgate -g wheelgate -m 0750 /var/lib/wheelgate
COPY --from=build /usr/local/bin/wheelgate /usr/local/bin/wheelgate
COPY proxy.toml /etc/wheelgate/proxy.toml
# The shipped proxy.toml reads these (listen on every interface inside the container; the store
# on the volume); WHEELGATE_UPSTREAM_URL is left to the operator: unset, the remote repository is
# offline and says so in the log.
ENV WHEELGATE_CONFIG=/etc/wheelgate/proxy.toml \
    WHEELGATE_LISTEN=0.0.0.0:3141 \
    WHEELGATE_STORE=/var/lib/wheelgate
USER 10001:10001
VOLUME ["/var/lib/wheelgate"]
EXPOSE 3141
# The image has no curl: `wheelgate health` asks the server's /-/health on the address the
# configuration listens on and exits 0 on a 200 (with [server.tls] it checks the port only).
HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 \
  CMD ["wheelgate", "health"]
# SIGTERM stops it gracefully (in-flight transfers get shutdown_grace, 30 s by default): give
# `docker stop` more than that, e.g. `docker stop -t 45`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["wheelgate"]
CMD ["serve"]
