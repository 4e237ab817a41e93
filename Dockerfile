# chainyard: one image, three commands: `api`, `worker`, `refit` (ENTRYPOINT is the `chainyard` console script).
# Dependencies come from the hash-pinned locks (tools/deploy/lock.sh) and are installed before the code is
# copied, so a code change rebuilds only the last layers. Nothing secret goes into the image: API tokens and
# Redis URLs arrive at run time (a mounted Secret, CHAINYARD_* variables). Build: docker build -t chainyard .
# PYTHON_IMAGE: any Debian bookworm image with a Python 3.11 `python3` and its venv module: the official slim
# image (default), or one built without Docker Hub from debootstrap plus Debian's python3 (tools/image/build.sh).
# The build machine's pip settings (a CA bundle, an index) may come in as the BuildKit secret `pip.conf` (and
# the files it names, e.g. `pip-ca` at /run/secrets/pip-ca); secrets are mounted for one RUN, never stored.
# VARIANT: cpu (default) or cuda, the GPU workers' image: JAX's CUDA 12 plugin and NVIDIA's CUDA libraries as
# wheels (requirements-cuda.lock) in the same virtualenv, and CHAINYARD_PLATFORM=gpu. Each variant builds only
# its own stages (BuildKit), so the cpu image is the one it would be without this argument.
#   docker build --build-arg VARIANT=cuda -t chainyard:0.1.0-cuda .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG VARIANT=cpu

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    export PIP_CONFIG_FILE=/run/secrets/pip.conf \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements-build.lock \
    && python3 -m venv /opt/chainyard \
    && /opt/chainyard/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements.lock

FROM build AS cpu-deps

# the CUDA plugin of the locked jax (the same version) and the nvidia-* wheels it loads, a few GB
FROM build AS cuda-deps
COPY requirements-cuda.lock ./
RUN --mount=type=secret,id=pip.conf --mount=type=secret,id=pip-ca \
    export PIP_CONFIG_FILE=/run/secrets/pip.conf \
    && /opt/chainyard/bin/pip install --no-cache-dir --require-hashes --no-deps -r requirements-cuda.lock

# chainyard's own wheel, built offline with the locked backend; its dependencies are already installed
FROM ${VARIANT}-deps AS app
COPY pyproject.toml README.md /src/
COPY cli /src/cli
COPY service /src/service
COPY workers /src/workers
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/chainyard/bin/pip install --no-cache-dir --no-deps --no-index --find-links /wheels chainyard==0.1.0

FROM ${PYTHON_IMAGE} AS cpu-image
LABEL org.opencontainers.image.title="chainyard" \
      org.opencontainers.image.description="Bayesian inference (NUTS) as a service: api, worker, refit" \
      org.opencontainers.image.licenses="Apache-2.0"
# a fixed numeric non-root user, so Kubernetes can check runAsNonRoot; /data is the worker volume
RUN groupadd --system --gid 10001 chainyard \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/chainyard --create-home \
       --shell /usr/sbin/nologin chainyard \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=app /opt/chainyard /opt/chainyard
# CHAINYARD_DATA_DIR holds checkpoints and, unless CHAINYARD_COMPILE_CACHE_DIR says otherwise, the JAX
# compile cache (/data/jax-cache). MPLCONFIGDIR: ArviZ imports matplotlib, which wants a writable directory.
ENV PATH=/opt/chainyard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CHAINYARD_DATA_DIR=/data \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
WORKDIR /home/chainyard
VOLUME ["/data"]
# 8000: the API (chainyard api --port); 9400: a worker's Prometheus metrics (CHAINYARD_METRICS_PORT)
EXPOSE 8000 9400
ENTRYPOINT ["chainyard"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]

# JAX on CUDA: without a CUDA device a worker exits 2 saying so (CHAINYARD_PLATFORM=cpu runs it on the CPU)
FROM cpu-image AS cuda-image
ENV CHAINYARD_PLATFORM=gpu

FROM ${VARIANT}-image
