# syntax=docker/dockerfile:1
# Build:  docker build -t admission-webhook:0.1.0 .
# Stage 1 builds wheels for the package and its pinned dependencies. PyYAML comes as its
# published wheel, which carries libyaml (a source build here would lack it, and read YAML 10× slower).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY webhook ./webhook
RUN pip wheel --no-cache-dir --only-binary PyYAML --wheel-dir /wheels --constraint requirements.lock .

# Stage 2: the runtime, with no compilers and no build tools.
FROM python:3.11-slim
RUN groupadd --system --gid 65532 webhook \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin webhook
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels admission-webhook
USER 65532:65532
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8443 8081
ENTRYPOINT ["webhook", "serve"]
CMD ["--cert-dir=/etc/webhook/certs"]
