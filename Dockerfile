# syntax=docker/dockerfile:1
# The streamcar image:  docker build -t streamcar:0.1.0 .
#
# Two stages. The builder turns the source tree into a wheel with hatchling; the final stage installs that wheel
# and its pinned dependencies (constraints.txt) into a venv, from binary wheels only. No compiler, build backend
# or source tree reaches the final image. For reproducible builds, pin the base images by digest as well
# (python:3.12-slim@sha256:...).

FROM python:3.12-slim AS builder
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .


FROM python:3.12-slim
LABEL org.opencontainers.image.title="streamcar" \
      org.opencontainers.image.description="A Kafka sidecar for microservices" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/streamcar/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The wheel and constraints.txt are bind-mounted for this one step, so neither stays in a layer.
# --only-binary: a dependency without a wheel for this Python fails the build instead of compiling from source.
# [tracing]: the OpenTelemetry SDK and OTLP exporter, so tracing can be switched on by configuration alone.
# pip byte-compiles at install time, so the image runs on a read-only root filesystem.
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    python -m venv /opt/streamcar \
 && wheel="$(echo /dist/streamcar-*.whl)" \
 && /opt/streamcar/bin/pip install --no-cache-dir --only-binary=:all: -c /tmp/constraints.txt "${wheel}[tracing]" \
 && groupadd --system --gid 10001 streamcar \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin streamcar

# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

# The admin endpoints (/healthz /readyz /metrics /status). The config must set admin.listen: 0.0.0.0:8095,
# since streamcar binds to loopback by default and the kubelet's probes come from outside the container.
EXPOSE 8095

# streamcar is PID 1 and handles SIGTERM itself (drain, commit, exit 0); it starts no child processes, so no
# init process is needed to forward signals or reap zombies.
STOPSIGNAL SIGTERM
ENTRYPOINT ["streamcar"]
CMD ["run", "-c", "/etc/streamcar/streamcar.yaml"]
