# Prometheus from Debian's package, for the compose test on machines without a
# registry (the official prom/prometheus image cannot be pulled there). Built on
# the local Debian base scripts/build-image.sh makes; apt works inside a build.
ARG BASE_IMAGE=raft-exchange-base:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
