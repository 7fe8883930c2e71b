# Tessellate scheduler image.
#
#   docker build -t tessellate:0.1.0 .
#
# The builder stage turns the project and its dependencies into wheels; the
# final stage installs only those wheels (no compilers, no pip cache, no source
# tree) and runs as an unprivileged user. Needs BuildKit (the default builder
# since Docker 23) for the RUN --mount below.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the wheel is built from (pyproject.toml names README.md as the readme).
COPY pyproject.toml README.md ./
COPY placement/ placement/
COPY scheduler/ scheduler/
COPY simulator/ simulator/
COPY agent/ agent/
COPY tessellate/ tessellate/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
# The root filesystem is read-only in the Deployment; /tmp is an emptyDir.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system --gid 65532 tessellate \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin tessellate
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels tessellate \
 && tessellate --help > /dev/null
# Numeric, so that the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 65532:65532
WORKDIR /tmp
EXPOSE 10259
ENTRYPOINT ["tessellate", "scheduler"]
CMD ["--config", "/etc/tessellate/config.yaml"]
