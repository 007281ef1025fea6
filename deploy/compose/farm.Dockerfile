# The farm's image for deploy/compose/compose.yaml; build context: the repository root.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY farm ./farm
RUN pip install --no-cache-dir .

# A non-root user: the farm needs no privilege (its ports are above 1024).
RUN useradd --system --no-create-home farm
USER farm

EXPOSE 5020-5119 9502
# No token: run it with FARM_API_TOKEN set (and drop --api-insecure) when the API's port is
# reachable from anywhere but this machine.
CMD ["farm", "up", "--count=100", "--host=0.0.0.0", "--api-host=0.0.0.0", "--api-insecure"]
