FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --create-home --uid 10001 linksync
COPY pyproject.toml README.md alembic.ini ./
COPY service ./service
COPY workers ./workers
COPY migrations ./migrations
RUN pip install -e .
USER linksync
EXPOSE 5000
CMD ["gunicorn", "--bind", "0.0.0.0:5000", "--workers", "4", "--access-logfile", "-", "service.wsgi:app"]
