# The GPU worker image: `qat worker`, one container per GPU.
# Build from the repository root: docker build -f deploy/worker.Dockerfile -t qat-worker:0.1.0 .
# The CUDA base and the torch wheel's CUDA variant go together; pick one the hosts' driver runs
# (the wheel brings its own CUDA libraries, the driver comes from the host).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# bubblewrap: every job's child runs in its sandbox (workers/jail.py); setpriv and prlimit
# come with util-linux
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv bubblewrap \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

# the CUDA build of requirements.lock's torch; the install below then keeps it
RUN pip install --index-url ${TORCH_INDEX_URL} torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY quantlib/ quantlib/
COPY service/ service/
COPY workers/ workers/
COPY migrations/ migrations/
# the service and the library, every dependency at its exact version in requirements.lock
RUN pip install -c requirements.lock '.[worker]' && rm -rf /src

RUN useradd --system --uid 10001 --create-home --home-dir /home/qat qat
USER 10001
WORKDIR /home/qat

# exec form: SIGTERM reaches the worker, whose warm shutdown lets the running job finish.
# `--gpu 0`: the runtime gives the container exactly one GPU (compose device_ids,
# Kubernetes nvidia.com/gpu: 1), and inside the container it is always index 0.
ENTRYPOINT ["qat"]
CMD ["worker", "--gpu", "0"]
