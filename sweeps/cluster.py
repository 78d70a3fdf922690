"""Where the sweep runs: an existing Ray cluster or a local one (``--cluster``).

- ``auto``: connect to a running cluster -- ``RAY_ADDRESS``, else a head started with
  ``ray start`` on this machine (Ray's own record of it, if a raylet of it is alive
  here) -- otherwise start a local one;
- ``local``: always start a local one (never attach to a running cluster);
- ``ADDRESS`` (``host:port`` or ``ray://host:port``): connect there or fail within a
  bounded time with a one-line error (a TCP probe of the address Ray will actually
  dial, then a bounded GCS handshake, so a wrong host or port never hangs ``ray.init``).

On a cluster of more than one node, :func:`connect` given the sweep's ``storage`` and
``mlflow_uri`` also makes sure trials can run on every node, before anything runs:

- a local MLflow store (``sqlite:``, ``file:``, a plain path) is refused: only the
  driver's node could reach it;
- ``storage`` must be shared: the driver writes a probe file there and a task pinned to
  every node reads it back (and imports the project); a node that cannot is named;
- the graph cache moves to ``<storage>/cache`` (a filesystem path only): the driver
  builds the graph once and every worker, on any node, reads that one cache.
  ``RELCORE_*`` variables of the driver (the cache location among them) reach the
  workers through the job's ``runtime_env``.

``python -m sweeps.cluster wait ADDRESS NODES`` waits until a cluster has that many
nodes (used by the SLURM script in ``cluster/slurm``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import ray

from relcore.errors import RelcoreError

PROBE_TIMEOUT_S = 5.0  # TCP connect to the cluster address
GCS_TIMEOUT_S = float(os.environ.get("RELCORE_RAY_CONNECT_TIMEOUT_S", "30"))  # GCS handshake
NODE_CHECK_TIMEOUT_S = float(os.environ.get("RELCORE_NODE_CHECK_TIMEOUT_S", "180"))  # per-node checks
CACHE_ENV = "RELCORE_CACHE_DIR"
_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for `ray job submit` entrypoints


@dataclass
class ClusterInfo:
    mode: str  # "connected" | "local"
    address: str
    nodes: int
    cpus: float
    gpus: float
    source: str = ""  # how the address was chosen
    node_ips: list[str] = field(default_factory=list)
    cache_dir: str | None = None  # set when the graph cache was moved to shared storage

    def describe(self) -> str:
        how = "connected to Ray cluster" if self.mode == "connected" else "started local Ray"
        src = f" ({self.source})" if self.source else ""
        text = (f"{how} at {self.address}{src}: {self.nodes} node(s), {self.cpus:g} CPUs, "
                f"{self.gpus:g} GPUs")
        if self.cache_dir:
            text += f"; shared graph cache {self.cache_dir}"
        return text


# --- choosing and checking the address ------------------------------------------------
def _hostport(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise RelcoreError(f"bad cluster address '{address}' (expected host:port or ray://host:port)")
    return host, int(port)


def _dialled(address: str) -> str:
    """The GCS address ``ray.init(address)`` will really dial (Ray rewrites 127.0.0.1 and
    localhost to this machine's outward IP unless it runs in single-node mode)."""
    if "://" in address:
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) or address
    except Exception:
        return address


def _probe(address: str) -> None:
    """Fail fast when nothing listens at ``address`` (as Ray will dial it)."""
    _hostport(address)  # validates the format first
    target = _dialled(address)
    host, port = _hostport(target)
    shown = address if target == address else f"{address} (dialled as {target})"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise RelcoreError(f"Ray cluster at {shown} is unreachable: "
                           f"{exc.strerror or exc or 'timed out'}") from None


_GCS_CHECK = """
import sys
from ray._raylet import GcsClient
try:
    client = GcsClient(address=sys.argv[1])
    print(len(client.get_all_node_info(timeout=10)))
except Exception as exc:
    msg = " ".join(str(exc).split())
    print(("AUTH " if "auth" in msg.lower() or "token" in msg.lower() else "ERR ") + msg[:300])
    sys.exit(1)
"""


def _check_gcs(address: str, timeout: float | None = None) -> None:
    """A bounded handshake with the cluster's GCS, in a child process that is killed on
    timeout (a port that answers TCP but is not a Ray GCS makes ``ray.init`` retry for
    minutes; a token mismatch makes it fail with a long message)."""
    timeout = GCS_TIMEOUT_S if timeout is None else timeout
    target = _dialled(address)
    try:
        out = subprocess.run([sys.executable, "-c", _GCS_CHECK, target], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RelcoreError(f"no Ray GCS answered at {address} within {timeout:g}s "
                           "(is it the head's GCS port, 6379 by default?)") from None
    last = (out.stdout.strip().splitlines() or [""])[-1]
    if out.returncode == 0:
        return
    if last.startswith("AUTH "):
        raise RelcoreError(f"Ray cluster at {address} refused this client's authentication: set "
                           "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN or "
                           "RAY_AUTH_TOKEN_PATH")
    detail = last[4:] if last.startswith("ERR ") else (out.stderr.strip().splitlines() or ["?"])[-1]
    raise RelcoreError(f"could not reach the Ray GCS at {address}: {detail}")


def _running_local_head() -> str | None:
    """GCS address of a cluster joined with ``ray start`` on this machine, if any.

    ``ray start`` records the address in ``<ray temp dir>/ray_current_cluster`` (Ray's
    temp dir: ``$RAY_TMPDIR/ray``, else ``/tmp/ray``) and ``ray stop`` removes it. A
    record is trusted only while a raylet of that cluster is still alive here, so a
    head killed without ``ray stop`` is ignored -- as are the private instances that
    other programs start with ``ray.init()``, which are never recorded there.
    """
    try:
        from ray._private.services import find_bootstrap_address, find_gcs_addresses

        recorded = find_bootstrap_address(None)
        if not recorded:
            return None
        find_gcs_addresses.cache_clear()
        return recorded if recorded in find_gcs_addresses() else None
    except Exception:
        return None


def _token_auth_like_ray_init() -> None:
    """``ray.init()`` turns token authentication on for a cluster it finds by itself when a
    token is available locally (never for an explicit address); do the same for the
    ``ray start`` head found here, which is then passed to ``ray.init`` explicitly."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )

        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    except Exception:  # a Ray without token authentication
        pass


def _choose(cluster: str) -> tuple[str | None, str]:
    """(address or None for a new local instance, how it was chosen)."""
    if cluster == "local":
        return None, "--cluster local"
    if cluster != "auto":
        return cluster, "--cluster"
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        if env == "local":
            return None, "RAY_ADDRESS=local"
        if env.startswith(("http://", "https://")):
            raise RelcoreError(f"RAY_ADDRESS={env} is a dashboard (job submission) address; the sweep "
                               "needs the cluster's GCS address host:6379 (or ray://host:10001)")
        return env, "RAY_ADDRESS"
    head = _running_local_head()
    if head:
        _token_auth_like_ray_init()
        return head, "head started with `ray start` on this machine"
    return None, "no running Ray cluster found"


# --- runtime environment of the workers ---------------------------------------------
def _job_env_vars() -> dict[str, str]:
    """env_vars of the enclosing Ray job's runtime_env (``ray job submit``), if any."""
    try:
        cfg = json.loads(os.environ.get(_JOB_CONFIG_ENV, "") or "{}")
        return dict((cfg.get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError):
        return {}


def _runtime_env() -> dict:
    """The driver's ``RELCORE_*`` variables (and a passive OpenMP wait policy) for every
    worker of the job, on every node.

    Inside a ``ray job submit`` entrypoint Ray merges this with the job's own runtime_env
    and refuses duplicate keys: variables the job already passes with the same value are
    left out, and where the driver changed one (the shared cache) the driver's wins.
    """
    env = {k: v for k, v in os.environ.items() if k.startswith("RELCORE_")}
    # OpenMP threads that spin while waiting stall a trial ~100x when trials share
    # cores (measured in sweeps/bench/bench_training.py): let them sleep instead.
    env.setdefault("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    job = _job_env_vars()
    if any(k in job and job[k] != v for k, v in env.items()):
        os.environ["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    env = {k: v for k, v in env.items() if job.get(k) != v}
    return {"env_vars": env} if env else {}


def _init(address: str | None, num_cpus: int | None) -> None:
    common = dict(runtime_env=_runtime_env() or None, log_to_driver=False, configure_logging=False)
    if address is None:
        # address="local": ignore RAY_ADDRESS and Ray's record of a `ray start` cluster.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **common)
        return
    try:
        ray.init(address=address, **common)
    except Exception as exc:
        msg = " ".join(str(exc).split())[:300]
        raise RelcoreError(f"could not connect to Ray cluster at {address}: {msg}") from None


def _alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _info(mode: str, address: str | None, source: str) -> ClusterInfo:
    res = ray.cluster_resources()
    nodes = _alive_nodes()
    return ClusterInfo(mode, address or ray.get_runtime_context().gcs_address, len(nodes),
                       res.get("CPU", 0.0), res.get("GPU", 0.0), source,
                       sorted(n.get("NodeManagerAddress", "?") for n in nodes))


def check_trial_fits(cpus: float, gpus: float, memory_bytes: float = 0.0) -> None:
    """Refuse a per-trial request that no alive node can hold: Tune would only warn and
    wait for it forever. (On an autoscaling cluster, start a node that fits first.)"""
    need = {"CPU": cpus, "GPU": gpus, "memory": memory_bytes}
    nodes = [n.get("Resources", {}) for n in _alive_nodes()]
    if any(all(res.get(k, 0.0) >= v for k, v in need.items() if v > 0) for res in nodes):
        return
    have = ", ".join(sorted({f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU / "
                             f"{r.get('memory', 0) / 2**30:.0f} GiB" for r in nodes}))
    ask = f"{cpus:g} CPU / {gpus:g} GPU" + (f" / {memory_bytes / 2**30:g} GiB" if memory_bytes else "")
    raise RelcoreError(f"a trial asks for {ask} (--cpus-per-trial, --gpus-per-trial, --memory-per-trial) "
                       f"but no node has that much: nodes have {have or 'nothing'}")


# --- multi-node checks ---------------------------------------------------------------
def is_local_mlflow(uri: str) -> bool:
    """True for an MLflow store that lives on the driver's disk."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def _is_uri(path: str) -> bool:
    return "://" in path


def _write_probe(storage: str, name: str, token: str) -> str:
    if _is_uri(storage):
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage)
        with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as fh:
            fh.write(token.encode())
        return f"{storage.rstrip('/')}/{name}"
    path = Path(storage) / name
    path.write_text(token)
    return str(path)


def _delete_probe(probe: str) -> None:
    try:
        if _is_uri(probe):
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(probe)
            fs.delete_file(path)
        else:
            Path(probe).unlink(missing_ok=True)
    except Exception:
        pass


def _node_check(probe: str, token: str) -> dict:
    """Runs on one node: can it read the driver's probe and import the project?"""
    ctx = ray.get_runtime_context()
    out = {"node_id": ctx.get_node_id(), "ip": ray.util.get_node_ip_address(), "error": None,
           "cache": os.environ.get(CACHE_ENV)}
    try:
        if "://" in probe:
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(probe)
            with fs.open_input_stream(path) as fh:
                seen = fh.read().decode()
        else:
            with open(probe) as fh:
                seen = fh.read()
        if seen != token:
            out["error"] = "storage: the probe file there has other content"
    except Exception as exc:
        out["error"] = f"storage: cannot read {probe} ({type(exc).__name__}: {exc})"
        return out
    try:
        import sweeps.trainables  # noqa: F401  (what every trial imports first)
    except Exception as exc:
        out["error"] = f"project: cannot import sweeps.trainables ({type(exc).__name__}: {exc})"
    return out


def check_nodes(storage: str, timeout: float | None = None) -> list[dict]:
    """Every alive node reads a probe the driver wrote into ``storage``; raise naming the
    first node that cannot (or does not answer in time)."""
    timeout = NODE_CHECK_TIMEOUT_S if timeout is None else timeout
    token = uuid.uuid4().hex
    name = f".relcore-node-check-{token[:12]}"
    try:
        probe = _write_probe(storage, name, token)
    except Exception as exc:
        raise RelcoreError(f"storage {storage} is not writable: {exc}") from None
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        task = ray.remote(num_cpus=0, max_retries=0)(_node_check)
        nodes = _alive_nodes()
        refs = {task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(probe, token): n for n in nodes}
        done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        results = []
        for ref in done:
            node = refs[ref]
            try:
                res = ray.get(ref)
            except Exception as exc:
                res = {"node_id": node["NodeID"], "ip": node.get("NodeManagerAddress"),
                       "error": f"check failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
            results.append(res)
        for res in results:
            if res["error"]:
                where = f"node {res['ip']} ({res['node_id'][:12]})"
                if res["error"].startswith("storage:"):
                    raise RelcoreError(
                        f"--storage {storage} is not shared with {where}, which "
                        f"{res['error'][len('storage: '):]}: use a filesystem every node mounts at "
                        "the same path (NFS, Lustre, ...) or a URI such as s3://bucket/path")
                raise RelcoreError(f"{where} cannot run trials: {res['error']}")
        if pending:
            node = refs[pending[0]]
            for ref in pending:
                ray.cancel(ref, force=True)
            raise RelcoreError(f"node {node.get('NodeManagerAddress')} ({node['NodeID'][:12]}) did not "
                               f"answer the storage check within {timeout:g}s")
        return results
    finally:
        _delete_probe(probe)


def _prepare_cluster(info: ClusterInfo, storage: str | None, mlflow_uri: str | None) -> bool:
    """Multi-node checks; True when the workers' environment must change (shared cache)."""
    if mlflow_uri is not None and is_local_mlflow(mlflow_uri):
        raise RelcoreError(f"--mlflow-uri {mlflow_uri} is a store on this machine that the other "
                           f"{info.nodes - 1} node(s) of the cluster cannot reach: start `mlflow server` "
                           "where every node reaches it and pass --mlflow-uri http://HOST:PORT")
    if storage is None:
        return False
    check_nodes(storage)
    if _is_uri(storage):
        return False  # relcore's cache is a local directory: each node keeps its own
    cache = str(Path(storage) / "cache")
    info.cache_dir = cache
    if os.environ.get(CACHE_ENV) == cache:
        return False
    os.environ[CACHE_ENV] = cache  # the driver builds the graph there, workers read it
    return True


def connect(cluster: str, num_cpus: int | None = None, *, storage: str | None = None,
            mlflow_uri: str | None = None) -> ClusterInfo:
    """Connect to or start Ray as ``--cluster`` asks; print nothing, return what happened.

    With ``storage`` (the sweep's absolute path or URI) and ``mlflow_uri``, a cluster of
    more than one node is checked and prepared as the module docstring says; a
    :class:`RelcoreError` is raised before any trial starts when it cannot work.
    """
    if ray.is_initialized():
        ray.shutdown()
    address, source = _choose(cluster)
    if address is None:
        os.environ.pop("RAY_ADDRESS", None)
        _init(None, num_cpus)
        return _info("local", None, source)
    _probe(address)
    if "://" not in address:
        _check_gcs(address)
    _init(address, num_cpus=None)
    info = _info("connected", address, source)
    if info.nodes > 1:
        try:
            restart = _prepare_cluster(info, storage, mlflow_uri)
        except BaseException:
            ray.shutdown()
            raise
        if restart:  # the workers' runtime_env is fixed per connection
            ray.shutdown()
            _init(address, num_cpus=None)
    return info


# --- command line: waiting for a cluster to assemble ---------------------------------
def wait_for_nodes(address: str, nodes: int, timeout: float) -> tuple[int, str]:
    """Wait until the cluster at ``address`` has ``nodes`` alive nodes or ``timeout`` passed;
    return how many are up and the last connection error (empty when none)."""
    deadline = time.monotonic() + timeout
    seen, error = 0, ""
    while True:
        try:
            _probe(address)
            _check_gcs(address, timeout=max(5.0, min(GCS_TIMEOUT_S, deadline - time.monotonic())))
            ray.init(address=address, log_to_driver=False, configure_logging=False)
            try:
                while True:
                    seen, error = len(_alive_nodes()), ""
                    if seen >= nodes or time.monotonic() > deadline:
                        return seen, error
                    time.sleep(2)
            finally:
                ray.shutdown()
        except Exception as exc:  # not up yet
            error = " ".join(str(exc).split())[:300]
            if ray.is_initialized():
                ray.shutdown()
            if time.monotonic() > deadline:
                return seen, error
            time.sleep(2)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m sweeps.cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait", help="wait until the Ray cluster at ADDRESS has NODES alive nodes")
    w.add_argument("address")
    w.add_argument("nodes", type=int)
    w.add_argument("--timeout", type=float, default=180.0)
    args = p.parse_args(argv)
    seen, error = wait_for_nodes(args.address, args.nodes, args.timeout)
    if seen < args.nodes:
        print(f"sweeps.cluster: only {seen} of {args.nodes} Ray node(s) up at {args.address} after "
              f"{args.timeout:g}s{': ' + error if error else ''}", file=sys.stderr)
        return 1
    print(f"sweeps.cluster: {seen} Ray node(s) up at {args.address}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
