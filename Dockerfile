# MNIST digit classifier served by BentoML, CPU-only.
#
#   docker build -t mnist-service .                      # needs artifacts/model.pt (make train)
#   (--build-arg MODEL_TAG=mnist-mlp:<version>: the store tag of that checkpoint, for /model_info)
#   docker run --rm -p 3000:3000 mnist-service
#
# Without a registry, run scripts/docker-engine.sh first and add the build argument it prints
# (--build-arg BASE_IMAGE=local/bookworm:latest). See docs/docker.md.

# Any Debian bookworm root filesystem: Python comes from Debian's python3 (3.11).
ARG BASE_IMAGE=debian:bookworm-slim

# ---- checkpoint: fail fast, and clearly, when the trained model is missing ----------------------
FROM ${BASE_IMAGE} AS checkpoint
# Marks this stage's throwaway images, so that `docker image prune --filter` can find them.
LABEL mnist-service.stage=checkpoint
# Path of the checkpoint inside the build context.
ARG MODEL_PATH=artifacts/model.pt
# The wildcard lets COPY succeed when the checkpoint is absent (pyproject.toml always matches),
# so that the next step can say what is wrong instead of "no such file or directory".
COPY pyproject.toml ${MODEL_PATH}* /checkpoint/
RUN f="/checkpoint/$(basename "${MODEL_PATH}")"; \
    if [ ! -f "$f" ]; then \
        echo "error: checkpoint '${MODEL_PATH}' not found in the build context." >&2; \
        echo "error: train first with 'make train', or pass --build-arg MODEL_PATH=<path inside the context>." >&2; \
        exit 1; \
    fi; \
    mv "$f" /model.pt

# ---- builder: a virtual environment with CPU-only torch and the serving dependencies ------------
FROM ${BASE_IMAGE} AS builder
# Index for torch when docker/wheelhouse/ holds no torch wheel.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates binutils \
    && rm -rf /var/lib/apt/lists/*

# Extra CA certificates (e.g. of an HTTPS-intercepting proxy) must be trusted before any download.
COPY docker/certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies are declared once, in pyproject.toml: [project].dependencies is the serving runtime.
COPY pyproject.toml /src/
COPY scripts/torch_source.py /src/scripts/
RUN python3 -c "import tomllib; \
deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; \
open('/src/requirements.txt', 'w').write('\n'.join(deps) + '\n')"

# torch first, CPU-only, chosen as `make setup` chooses it (scripts/torch_source.py): the newest
# torch-*+cpu wheel in docker/wheelhouse/ for this Python within pyproject's range (no download
# of torch itself), else pyproject's torch from TORCH_INDEX_URL.
COPY docker/wheelhouse/ /tmp/wheelhouse/
RUN python /src/scripts/torch_source.py --install \
        --find-links /tmp/wheelhouse --fallback-index "$TORCH_INDEX_URL" \
    && rm -rf /tmp/wheelhouse

# The rest of the runtime; torch is already satisfied, so pip must not fetch another build.
RUN pip install -r /src/requirements.txt \
    && pip check

# The image must hold no CUDA: no nvidia-*/triton wheels (nvidia-ml-py, bentoml's pure-Python NVML
# binding, carries no library), no CUDA shared objects, and a torch built without CUDA.
RUN if pip list --format=freeze | grep -iE '^(nvidia-|triton|cuda)' | grep -iv '^nvidia-ml-py=='; then \
        echo "error: CUDA packages in the virtual environment (listed above)" >&2; exit 1; \
    fi \
    && if find /opt/venv -name '*.so*' | grep -iE '/lib(cu|nv|nccl)[^/]*$'; then \
        echo "error: CUDA libraries in the virtual environment (listed above)" >&2; exit 1; \
    fi \
    && python -c "import torch, sys; sys.exit(torch.version.cuda is not None)"

# Trim what serving never loads (about 250 MB): C++ headers and CMake files, torch's C++ test
# binaries, the test suites that numpy, sympy, networkx... ship, and the static symbol tables of
# torch's own libraries (the dynamic symbols that linking needs stay). Bytecode caches stay: the
# non-root user could not write them, and each start would recompile torch.
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
    && rm -rf "$site/torch/include" "$site/torch/share/cmake" "$site"/torch/bin/*Test \
        "$site"/torch/bin/test_* "$site"/torch/bin/protoc* \
    && find "$site" -depth -type d -name tests -exec rm -rf {} + \
    && strip --strip-unneeded "$site"/torch/lib/libtorch_cpu.so "$site"/torch/lib/libtorch_python.so \
        "$site"/torch/lib/libc10.so \
    && python -c "import torch; print(torch.nn.Linear(784, 10)(torch.ones(2, 784)).shape)"

# ---- runtime -------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# Python only (no venv, compilers or headers); tini as PID 1 passes SIGTERM on and reaps children.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 tini \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb

RUN useradd --uid 10001 --user-group --no-create-home --home-dir /app --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
RUN mkdir -p /app/bentoml && chown app:app /app/bentoml
ENV PATH=/opt/venv/bin:$PATH \
    MODEL_PATH=/app/model.pt \
    BENTOML_DO_NOT_TRACK=true \
    BENTOML_HOME=/app/bentoml \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# What changes most often comes last: the code, then the model. Of training/, only the core that
# serving imports (checkpoint, model...); the retraining pipeline (training/pipeline/) stays out.
COPY service/ /app/service/
COPY training/*.py /app/training/
# PYTHONDONTWRITEBYTECODE: nothing caches bytecode at run time, so it is compiled here, once,
# instead of in each process of every start (the Makefile's COMPILE says what it costs).
RUN python -m compileall -q /app/service /app/training
COPY --from=checkpoint /model.pt /app/model.pt
# The store tag the checkpoint was promoted as (`scripts/build` passes it), for /model_info and
# the Open Inference model version; empty: they name the checkpoint by its sha256.
ARG MODEL_TAG=""
ENV MNIST_MODEL_TAG=${MODEL_TAG}

USER 10001:10001
EXPOSE 3000
# A raw socket, not urllib: the check runs every few seconds in every replica, and this one costs
# a third of the CPU (~20 ms). Orchestrators shorten the interval (deploy/swarm/stack.yml).
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-I", "-S", "-c", "import socket; s = socket.create_connection(('127.0.0.1', 3000), 2); s.sendall(b'GET /readyz HTTP/1.0\\r\\n\\r\\n'); raise SystemExit(s.recv(12)[9:12] != b'200')"]

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["bentoml", "serve", "service.service:MNISTClassifier", "--host", "0.0.0.0", "--port", "3000"]
