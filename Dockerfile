FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
RUN useradd --create-home --uid 10001 linksync
# The image installs exactly the versions the test suite passed with: requirements.lock is
# applied as constraints (every dependency, direct or transitive, is pinned by it; pip fails
# if the project's bounds and the lock disagree). PIP_CONSTRAINT applies it to the isolated
# build environment too. `pip check` refuses an inconsistent set.
COPY requirements.lock pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN PIP_CONSTRAINT=/app/requirements.lock pip install --constraint requirements.lock -e . \
    && pip check \
    && mkdir -p /metrics && chown linksync /metrics
USER linksync
EXPOSE 5000
CMD ["gunicorn", "-c", "python:service.gunicorn_conf", "service.wsgi:app"]
