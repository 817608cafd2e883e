# pyproxy container image.
#   docker build -t pyproxy .
#   docker run --rm -p 8080:8080 -v "$PWD/my-config:/etc/pyproxy:ro" pyproxy
# Port 19000 (admin: /ready, /config_dump, ...) is deliberately not published: see README.md,
# "Container image". tests/integration/test_image.py runs this file's command line outside a
# container and keeps it consistent with config/kubernetes/.
ARG PYTHON_VERSION=3.12

# Build: install pyproxy and its dependencies (from pyproject.toml) into a virtualenv that the
# final stage copies whole; the source tree and pip's build environment stay behind.
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY pyproxy ./pyproxy
RUN python -m venv /opt/pyproxy \
    && /opt/pyproxy/bin/pip install --no-cache-dir .

FROM python:${PYTHON_VERSION}-slim
# A fixed numeric UID/GID, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 pyproxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pyproxy
COPY --from=build /opt/pyproxy /opt/pyproxy
# The default configuration answers without any upstream (a redirect to https); mount your own
# directory over /etc/pyproxy to replace it.
COPY config/https-redirect.yaml /etc/pyproxy/
ENV PATH=/opt/pyproxy/bin:$PATH
USER 10001:10001
WORKDIR /opt/pyproxy
EXPOSE 8080
# Slim images have no curl: python's urllib asks the admin for /ready (503 while starting and
# once SIGTERM starts the drain, 200 in between; an HTTP error or refused connection exits 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:19000/ready', timeout=2)"]
# Exec form throughout: pyproxy is PID 1 and receives SIGTERM itself (no shell in between),
# stops accepting, drains in-flight requests and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "pyproxy"]
# Inside a container 127.0.0.1 is unreachable from outside: the implicit listener, the admin and
# Gateway listeners (--bind-address) bind every address; only 8080 is published.
CMD ["--config", "/etc/pyproxy", "--listen", "0.0.0.0:8080", "--admin", "0.0.0.0:19000", "--bind-address", "0.0.0.0"]
