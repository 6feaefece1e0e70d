# Server-side tagging gateway. Mount the container file at /config/container.yaml
# and a volume at /data for the SQLite outbox:
#   docker run -p 8080:8080 -v $PWD/examples:/config -v gateway-data:/data IMAGE
# The gateway reads GATEWAY_STORAGE_URL itself: it is the storage of a container
# file that names none. Webhook secrets come from the environment (the sample's
# webhooks stay switched off until they are set); docs/configuration-env.md
# lists the sample's variables, docs/operations.md every GATEWAY_* one.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_CONFIG=/config/container.yaml \
    GATEWAY_STORAGE_URL=sqlite:////data/gateway.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY clients ./clients
COPY rules ./rules
COPY tags ./tags
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /data /config \
    && chown gateway /data
COPY examples/container.yaml /config/container.yaml

USER gateway
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"

ENTRYPOINT ["gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
