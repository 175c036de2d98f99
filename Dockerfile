# syntax=docker/dockerfile:1
# One image for every pipeline service (ingest, worker, sink, api, and the one-shot init);
# docker-compose.yml picks the part with the `geostream` sub-command.
#
# Two stages: the build stage turns the project and every pinned dependency into wheels (with a
# compiler at hand for any dependency that ships only as source); the runtime stage installs
# those wheels offline, so it carries no compiler, no pip cache and no source tree.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# README.md is matched by a wildcard so the build works before the README exists.
COPY pyproject.toml setup.py README.m[d] ./
COPY config/ config/
COPY geostream/ geostream/
COPY ingest/ ingest/
COPY processors/ processors/
COPY schemas/ schemas/
COPY sinks/ sinks/
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim-bookworm AS runtime
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels geostream
# A fixed, unprivileged uid; its home is the working directory, where faust keeps its data dir.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/geostream geostream
USER geostream
WORKDIR /home/geostream
ENTRYPOINT ["geostream"]
CMD ["--help"]
