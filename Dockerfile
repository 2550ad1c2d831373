# syntax=docker/dockerfile:1
# The one image for both the exchange node and the operator.
#
#   docker build -t raft-exchange .                     # official Python base
#   make image                                          # these machines: local base + wheelhouse
#
# BASE_IMAGE must be a Debian bookworm userland. The official python image
# has Python already; a bare Debian base (debootstrap) gets Debian's python3.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# PIP_NO_INDEX=1 installs only from build/wheels (made on the host by
# `make image` where the build cannot reach a package index).
ARG PIP_NO_INDEX=
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY . /src
RUN set -e; python3 -m venv /opt/exchange; \
    if [ -n "$PIP_NO_INDEX" ]; then \
        /opt/exchange/bin/pip install --no-index --find-links /src/build/wheels "raft-exchange[backup]"; \
    else \
        /opt/exchange/bin/pip install -c /src/constraints.txt "/src[backup]"; \
    fi; \
    /opt/exchange/bin/exchange --help >/dev/null; \
    /opt/exchange/bin/pip uninstall -y -q pip setuptools wheel

FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN if ! command -v python3 >/dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends python3 \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid 10001 exchange \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/exchange --shell /usr/sbin/nologin exchange \
    && mkdir -p /var/lib/exchange && chown 10001:10001 /var/lib/exchange
COPY --from=build /opt/exchange /opt/exchange
ENV PATH=/opt/exchange/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    EXCHANGE_DATA_DIR=/var/lib/exchange \
    EXCHANGE_HTTP_PORT=8080 \
    EXCHANGE_GRPC_PORT=7070
USER 10001:10001
WORKDIR /var/lib/exchange
VOLUME ["/var/lib/exchange"]
EXPOSE 8080 8081 7070
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('EXCHANGE_HTTP_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["exchange"]
CMD ["node"]
