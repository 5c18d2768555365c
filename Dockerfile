# One image for the coordinator and every example service; the command picks which.
#   docker build -t kafka-saga .
#   docker run kafka-saga services.payment        # a step service
#   docker run kafka-saga saga.cli coordinator    # the coordinator of the example's sagas
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY saga ./saga
COPY services ./services
RUN pip install '.[otlp]' \
    && useradd --system --uid 10001 --no-create-home saga

USER saga
ENV SAGA_HEALTH_PORT=8080 \
    SAGA_DEFINITIONS=contracts.catalog:saga_definitions
EXPOSE 8080
# Ready once the process consumes its topics (GET /readyz); no curl in slim images.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2)"]
ENTRYPOINT ["python", "-m"]
CMD ["saga.cli", "coordinator"]
