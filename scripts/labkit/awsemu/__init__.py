"""A local AWS control plane (RDS, ElastiCache, MemoryDB) over the lab's real servers, and a
Secrets Manager (secrets.py).

    lab.aws_up()  -> "http://127.0.0.1:PORT"   (also starts the emulator's own Redis nodes)
    lab.aws_env() -> AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION / AWS_ENDPOINT_URL
    aws --endpoint-url URL rds failover-db-cluster --db-cluster-identifier lab-postgres

Modules: server (HTTP, routing, faults, call log), models (the clusters and their failovers),
secrets (Secrets Manager), sigv4 (request signature checks), wire (XML / JSON formats), nodes (the extra Redis servers),
control (lab side: start/stop, control API, repoint config). See models.py for ids and nodes.
"""

from .server import DEFAULT_CREDENTIALS, DEFAULT_REGION, Emulator

__all__ = ["Emulator", "DEFAULT_CREDENTIALS", "DEFAULT_REGION"]
