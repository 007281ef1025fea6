# The farm's image: `farm` on a slim Python, as a non-root user, the package installed from
# this checkout. Used by deploy/k8s (the StatefulSet) and deploy/compose.
#
#   docker build -t modbus-farm:0.1.0 .
#   docker run --rm -p 127.0.0.1:5020-5119:5020-5119 -p 127.0.0.1:9502:9502 modbus-farm:0.1.0
#
# By default it serves 100 devices (ports 5020-5119) and the control API (port 9502) on every
# address of the container, so that published ports reach them. Mutating API calls need a
# token: pass one with -e FARM_API_TOKEN=...; without one the farm makes one for the run and
# prints it first (`docker logs`). Reads (status, targets, /metrics, the probes) need none.
# scripts/test-image builds this file and runs it (docs/scale-out.md).
#
# The farm needs no privilege in a container: its devices listen on ports above 1024 (port
# 502 would need CAP_NET_BIND_SERVICE). Register banks live in /dev/shm.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY farm ./farm
RUN pip install --no-cache-dir . && rm -rf /src

# A numeric user and group of its own (10001:10001, as deploy/k8s runs it), so that
# Kubernetes' runAsNonRoot can check it without a passwd lookup and `id` names both.
RUN groupadd --system --gid 10001 farm \
    && useradd --system --uid 10001 --gid 10001 --no-create-home farm
USER 10001:10001
WORKDIR /tmp

# 5020-5119: the default devices; 9502: control API (/api/v1/..., /metrics); 9503:
# /metrics alone, when asked for (--metrics-port).
EXPOSE 5020-5119 9502 9503
ENTRYPOINT ["farm"]
CMD ["up", "--count=100", "--host=0.0.0.0", "--api-host=0.0.0.0", "--generate-api-token"]
