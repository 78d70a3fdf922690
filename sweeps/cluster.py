"""Where the sweep runs: an existing Ray cluster or a local one (``--cluster``).

- ``auto``: connect to a running cluster (``RAY_ADDRESS`` or a head started with
  ``ray start`` on this machine), otherwise start a local one;
- ``local``: always start a local one;
- ``ADDRESS`` (``host:port`` or ``ray://host:port``): connect there or fail within a
  bounded time (a TCP probe first, so an unreachable host never hangs ``ray.init``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import ray

from relcore.errors import RelcoreError

PROBE_TIMEOUT_S = 5.0


@dataclass
class ClusterInfo:
    mode: str  # "connected" | "local"
    address: str
    nodes: int
    cpus: float
    gpus: float

    def describe(self) -> str:
        how = "connected to Ray cluster" if self.mode == "connected" else "started local Ray"
        return f"{how} at {self.address}: {self.nodes} node(s), {self.cpus:g} CPUs, {self.gpus:g} GPUs"


def _probe(address: str) -> None:
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RelcoreError(f"bad cluster address '{address}' (expected host:port or ray://host:port)")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RelcoreError(f"Ray cluster at {address} is unreachable: {exc.strerror or exc}") from exc


def _running_local_head() -> str | None:
    """Address of a head started with ``ray start --head`` on this machine, if any."""
    try:
        from ray._private.services import find_gcs_addresses

        addresses = find_gcs_addresses()
    except Exception:
        return None
    return next(iter(addresses), None) if addresses else None


def connect(cluster: str, num_cpus: int | None = None) -> ClusterInfo:
    """Connect to or start Ray as ``--cluster`` asks; print nothing, return what happened."""
    if ray.is_initialized():
        ray.shutdown()
    address: str | None
    if cluster == "local":
        address = None
    elif cluster == "auto":
        address = os.environ.get("RAY_ADDRESS") or _running_local_head()
        if address:
            _probe(address)
    else:
        _probe(cluster)
        address = cluster
    runtime_env = {"env_vars": {k: v for k, v in os.environ.items() if k.startswith("RELCORE_")}}
    if address is None:
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(num_cpus=num_cpus, include_dashboard=False, runtime_env=runtime_env,
                 log_to_driver=False, configure_logging=False)
        mode = "local"
    else:
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False,
                     configure_logging=False)
        except Exception as exc:
            raise RelcoreError(f"could not connect to Ray cluster at {address}: {exc}") from exc
        mode = "connected"
    res = ray.cluster_resources()
    nodes = len([n for n in ray.nodes() if n.get("Alive")])
    return ClusterInfo(mode, address or ray.get_runtime_context().gcs_address, nodes,
                       res.get("CPU", 0.0), res.get("GPU", 0.0))
