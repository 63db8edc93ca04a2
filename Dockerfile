# The backend image: `rarelabel serve` and `rarelabel worker` (see docker-compose.yml).
FROM python:3.11-slim
# Install torch first so sentence-transformers does not pull another build. Pass
# --build-arg TORCH="torch==2.13.0+cpu" with a CPU index to keep the image small.
ARG TORCH="torch==2.13.0"
WORKDIR /app
# hnswlib (SEALS) has no wheel for this Python: it builds from source and needs a compiler.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir "${TORCH}"
COPY pyproject.toml README.md ./
COPY backend backend
COPY model model
RUN pip install --no-cache-dir .
ENV HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EXPOSE 9090
CMD ["rarelabel", "serve", "--port", "9090"]
