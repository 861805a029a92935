# kvtier-server in a container image (Debian bookworm).
#
# The build stage installs and builds with scripts/lib.sh's
# install_debian_packages and build_kvtier, the functions scripts/test.sh
# runs, so the image is built as CI builds. The runtime stage holds
# kvtier-server, kvtierctl and kvtier-health, the Debian packages of the
# libraries they load (container/runtime-packages.sh) and python3-grpcio
# for the health check, and runs as the non-root user kvtier (10001).
#
#   docker build -t kvtier:0.1.0 .
#   docker run -p 50051:50051 -v kvtier-data:/var/lib/kvtier kvtier:0.1.0 \
#       --listen=0.0.0.0:50051 --data_dir=/var/lib/kvtier/data --allow_insecure
#
# Without --allow_insecure the server refuses plaintext, or no access file,
# on a non-loopback address: give it TLS and an access file
# (README.md, "Quick start"), or --allow_insecure on a trusted network.

FROM debian:bookworm AS build
WORKDIR /src
# Packages first: this layer stays cached until scripts/lib.sh changes.
COPY scripts/lib.sh scripts/lib.sh
RUN bash -c 'source scripts/lib.sh && install_debian_packages' \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN bash -c 'source scripts/lib.sh && build_kvtier' \
    && container/runtime-packages.sh build/bin/kvtier-server build/bin/kvtierctl \
       > /runtime-packages.txt

FROM debian:bookworm-slim
COPY --from=build /runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
    && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
       python3 python3-grpcio \
    && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
    && groupadd --system --gid 10001 kvtier \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/kvtier \
       --shell /usr/sbin/nologin kvtier \
    && install -d -o kvtier -g kvtier -m 0750 /var/lib/kvtier
COPY --from=build /src/build/bin/kvtier-server /src/build/bin/kvtierctl /usr/local/bin/
COPY container/kvtier-health /usr/local/bin/kvtier-health
USER 10001:10001
WORKDIR /var/lib/kvtier
# gRPC; Prometheus /metrics where metrics_listen is set.
EXPOSE 50051 9464
# gRPC health (grpc.health.v1) over plaintext on the default port; with TLS
# run `kvtier-health --tls_ca_file ...` instead (docker run --health-cmd).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["kvtier-health", "--target=127.0.0.1:50051", "--deadline_s=2"]
ENTRYPOINT ["kvtier-server"]
CMD ["--listen=0.0.0.0:50051", "--data_dir=/var/lib/kvtier/data"]
