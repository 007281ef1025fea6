# The farm's image: `farm` on a slim Python, as a non-root user, the package installed from
# this checkout. Used by deploy/k8s (the StatefulSet) and deploy/compose.
#
#   docker build -t modbus-farm:0.1.0 .
#
# The farm needs no privilege in a container: its devices listen on ports above 1024 (port
# 502 would need CAP_NET_BIND_SERVICE). Register banks live in /dev/shm.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY farm ./farm
RUN pip install --no-cache-dir . && rm -rf /src

# A numeric user, so that Kubernetes' runAsNonRoot can check it without a passwd lookup.
RUN useradd --system --uid 10001 --user-group --no-create-home farm
USER 10001:10001
WORKDIR /tmp

# 9502: control API (/api/v1/..., /metrics); 9503: /metrics alone, when asked for.
EXPOSE 9502 9503
ENTRYPOINT ["farm"]
CMD ["up", "--count=100", "--host=0.0.0.0"]
