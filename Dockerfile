# The one image every service of docker-compose.yml runs: worker, beat, Flower,
# the dashboard, the intake and the one-shot migration differ only by their command.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/lethe
COPY pyproject.toml README.md /src/
COPY worker /src/worker
COPY tasks /src/tasks
COPY schedules /src/schedules
# the shipped register, which pyproject maps into the package as worker/registers/
COPY registers /src/registers
RUN /opt/lethe/bin/pip install "/src[ops]"

FROM python:3.11-slim-bookworm
ENV PATH=/opt/lethe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LETHE_HOME=/var/lib/lethe \
    LETHE_REGISTER=/etc/lethe/registers/negomarkets.yaml \
    LETHE_LOG_FORMAT=json
COPY --from=build /opt/lethe /opt/lethe
COPY registers /etc/lethe/registers
# No secret here: LETHE_SECRET, LETHE_DASHBOARD_TOKEN and the database passwords
# come from the environment (docker-compose.yml reads them from .env).
RUN useradd --system --uid 10001 --home-dir /var/lib/lethe --create-home lethe
USER lethe
WORKDIR /var/lib/lethe
EXPOSE 8000 8001 5555
CMD ["lethe", "--help"]
