# The API image: `qat serve`; the same image runs `qat dispatcher`, `qat db upgrade` and `qat admin`.
# Build from the repository root: docker build -f deploy/api.Dockerfile -t qat-api:0.1.0 .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY quantlib/ quantlib/
COPY service/ service/
COPY workers/ workers/
COPY migrations/ migrations/
# the torch-free service extra, at the exact versions of requirements.lock: no torch in this image
RUN pip install -c requirements.lock '.[service]' && rm -rf /src

RUN useradd --system --uid 10001 --create-home --home-dir /home/qat qat
USER 10001
WORKDIR /home/qat

EXPOSE 8000
# /healthz: the process answers (service/api/health.py); /readyz also checks database, broker and storage
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# exec form: SIGTERM reaches qat itself, not a shell
ENTRYPOINT ["qat"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
