# Production image: the service only (no local warehouse, no dev tools), as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=4000 \
    LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY dbx_backend ./dbx_backend
RUN pip install . \
    && useradd --create-home --uid 10001 dbx

USER 10001
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '4000')}/health\", timeout=2)"]
CMD ["dbx-backend", "serve"]
