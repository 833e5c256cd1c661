# The model-canary agents (router, worker, evaluator) and the CLI in one image; the entry point
# is `canary`, so a container runs e.g. `canary router`. The two scikit-learn iris models of the
# demo are baked in at build time under /models (iris-v1.joblib, iris-v2.joblib).
#   docker build -t model-canary .
#   docker run --rm model-canary worker --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Exact versions from constraints.txt: the image runs what CI tested. A regular (non-editable)
# install, so the sources can be dropped afterwards.
COPY pyproject.toml constraints.txt README.md ./
COPY streams ./streams
COPY agents ./agents
COPY schemas ./schemas
COPY model_canary ./model_canary
# The sklearn extra: the workers serve the demo's scikit-learn models.
RUN pip install -c constraints.txt '.[sklearn]' \
    && canary demo train --out /models \
    && chmod -R a+rX /models \
    && rm -rf /src

# A non-root user whose home is the working directory: the evaluator (faust) keeps its local
# data directory in the working directory, so it must be writable.
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/canary canary
USER canary
WORKDIR /var/lib/canary

ENTRYPOINT ["canary"]
CMD ["--help"]
