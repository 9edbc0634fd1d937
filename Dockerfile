FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 linksync
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install -e . && mkdir -p /metrics && chown linksync /metrics
USER linksync
EXPOSE 5000
CMD ["gunicorn", "-c", "python:service.gunicorn_conf", "service.wsgi:app"]
