# callqueue-scorer: one image for every job (`callscore <subcommand>`; see docker-compose.yml).
# Slim Python, exact pins (pyproject.toml; deploy/constraints.txt for their dependencies), a
# non-root user, and no data, keys or models inside: those are volumes, compose secrets or
# downloads at run time.
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what the package build needs, so a change to tests or docs does not rebuild this layer.
WORKDIR /src
COPY pyproject.toml README.md deploy/constraints.txt ./
COPY schemas/ schemas/
COPY core/ core/
COPY registry/ registry/
COPY feedback/ feedback/
COPY lake/ lake/
COPY callqueue/ callqueue/
COPY trainer/ trainer/
COPY streamer/ streamer/
COPY monitor/ monitor/
COPY callscore/ callscore/
RUN pip install --constraint constraints.txt . && rm -rf /src

COPY deploy/docker-entrypoint.sh /usr/local/bin/callscore-entrypoint
COPY deploy/ensure-model-keys.sh /usr/local/bin/callscore-ensure-keys
COPY deploy/healthcheck.py /usr/local/lib/callscore/healthcheck.py

# The state folders exist in the image, owned by the runtime user, so a named volume mounted on
# one starts with that owner (Docker copies it on first use) and the non-root user can write.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin callscore \
    && mkdir -p /var/lib/callscore/artifacts /var/lib/callscore/signing-key \
        /var/lib/callscore/trusted-keys /var/lib/callscore/cache /var/lib/callscore/runs \
        /var/lib/callscore/lake /var/lib/callscore/streamer \
    && chown -R callscore:callscore /var/lib/callscore \
    && chmod 0700 /var/lib/callscore/signing-key

USER callscore
WORKDIR /var/lib/callscore
EXPOSE 6066 6067

# Liveness of a scorer (/healthz on CALLSCORE_HTTP_PORT); compose overrides it for other jobs.
HEALTHCHECK --interval=15s --timeout=6s --start-period=60s --retries=3 \
    CMD ["python", "/usr/local/lib/callscore/healthcheck.py"]

ENTRYPOINT ["callscore-entrypoint"]
CMD ["--help"]
