"""Issue 6: the sweep on an existing multi-node Ray cluster, as a SLURM batch job, and the
refusals that protect a cluster run -- all with real processes on this machine.

- a real 2-node Ray cluster (``ray start --head`` + ``ray start --address``, 1 CPU each,
  the second with its own custom resource and, where mount namespaces are available, a
  private view of one "node-local" directory), a real ``mlflow server`` with served
  artifacts, and ``run_grid.py --cluster auto`` with ``RAY_ADDRESS`` set to the head;
- the SLURM path (``sbatch cluster/slurm/relcore-sweep.sbatch``) when ``RELCORE_SLURM_TEST=1``
  and a SLURM cluster is up (``.ci/run`` starts one with ``.ci/start-slurm.sh``);
- bad input: an unreachable or non-Ray address, a local MLflow store on a multi-node
  cluster, a storage path the other node does not share.

Network: every server listens on 127.0.0.1 only. Ray rewrites 127.0.0.1 to the machine's
outward IP (and then listens on all interfaces) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0;
that single-node switch forbids ``ray start --address``, so the second node runs Ray's own
CLI with just that one rewrite turned off (``_RAY_START_LOOPBACK``). Every process started
here runs in its own session and is stopped through its own process group (``ray stop``
would stop every Ray on the machine), then any straggler carrying this test's private
Ray temp dir in its command line is killed by pid.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_GRID = str(REPO / "sweeps" / "run_grid.py")
SBATCH_SCRIPT = REPO / "cluster" / "slurm" / "relcore-sweep.sbatch"
PY = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
MLFLOW = str(Path(sys.executable).with_name("mlflow"))
QUICK_TRIALS = {"pretrain": 2, "finetune": 16}  # as in test_sweep.py

pytestmark = pytest.mark.cluster

_RAY_START_LOOPBACK = """\
# `ray start`, except that a 127.0.0.1 address is not rewritten to this machine's outward IP
import sys
import ray._private.services as services
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv = ["ray", *sys.argv[1:]]
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_unshare_mount() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    try:
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Processes:
    """Processes started by this module, each the leader of its own session."""

    def __init__(self, marker: str):
        self.marker = marker  # a private path every Ray process of ours has in its cmdline
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: list[str], env: dict, log: Path, cwd: Path | None = None):
        fh = open(log, "wb")
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        fh.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, grace: float = 5.0) -> None:
        for _, proc in reversed(self.procs):
            _killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + grace  # Ray's gcs_server may take much longer: no need here
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                pass
        for _, proc in reversed(self.procs):
            _killpg(proc.pid, signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        kill_stragglers(self.marker)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _pids_with(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (a private temp path)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids


def kill_stragglers(marker: str) -> None:
    for pid in _pids_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.5)
    pytest.fail(f"{url} not up after {timeout}s: {log.read_text()[-2000:]}")


# --- fixtures: an MLflow server and a 2-node Ray cluster ------------------------------
@pytest.fixture(scope="module")
def mlflow_server():
    tmp = Path(tempfile.mkdtemp(prefix="relcore-mlflow-"))
    procs = Processes(str(tmp))
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = tmp / "server.log"
    proc = procs.start("mlflow", [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port),
                                  "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                                  "--serve-artifacts", "--artifacts-destination", str(tmp / "artifacts")],
                       env, log)
    uri = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{uri}/health", 90, proc, log)
        yield {"uri": uri, "artifacts": tmp / "artifacts"}
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_cluster():
    # A short private root: Ray's unix sockets live under it (paths are limited to 107 bytes).
    tmp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    procs = Processes(str(tmp))
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    (tmp / "blocker").write_text("not a directory\n")
    local = tmp / "node-local"  # the second node sees its own empty directory here
    shared = tmp / "shared"
    for d in (local, shared, tmp / "driver"):
        d.mkdir()
    (tmp / "ray_start_loopback.py").write_text(_RAY_START_LOOPBACK)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RELCORE_"))}
    ray_env = {**base, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
               "RAY_USAGE_STATS_ENABLED": "0",
               # a node-local cache nobody can use: trials work only with the driver's cache dir
               "RELCORE_CACHE_DIR": str(tmp / "blocker" / "cache")}
    port = free_port()
    address = f"127.0.0.1:{port}"
    private_view = _can_unshare_mount()
    try:
        head = procs.start("head", [RAY, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                                    "--include-dashboard=false", "--disable-usage-stats"],
                           {**ray_env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, tmp / "head.log")
        driver_env = {**base, "RAY_TMPDIR": str(tmp), "RAY_AUTH_MODE": "token",
                      "RAY_AUTH_TOKEN_PATH": str(token), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                      "RAY_USAGE_STATS_ENABLED": "0", "RELCORE_CACHE_DIR": str(tmp / "driver-cache")}
        _wait_nodes(address, 1, driver_env, head, tmp / "head.log")
        second = [PY, str(tmp / "ray_start_loopback.py"), "start", "--block", f"--address={address}",
                  "--num-cpus=1", '--resources={"second_node": 1}']
        if private_view:
            second = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                      'mount -t tmpfs relcore-node-local "$0" && exec "$@"', str(local), *second]
        worker = procs.start("second", second, ray_env, tmp / "second.log")
        _wait_nodes(address, 2, driver_env, worker, tmp / "second.log")
        nodes = _node_ids(address, driver_env)
        yield {"address": address, "port": port, "tmp": tmp, "env": driver_env, "local": local,
               "shared": shared, "private_view": private_view, "nodes": nodes}
    finally:
        procs.stop()
        assert not _pids_with(str(tmp)), "Ray processes of the test cluster survived"
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_nodes(address: str, n: int, env: dict, proc: subprocess.Popen, log: Path) -> None:
    out = subprocess.run([PY, "-m", "sweeps.cluster", "wait", address, str(n), "--timeout", "90"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=150)
    if out.returncode != 0 or proc.poll() is not None:
        pytest.fail(f"Ray node did not come up: {out.stderr[-1500:]}\n{log.read_text()[-3000:]}")


def _node_ids(address: str, env: dict) -> dict[str, str]:
    """{"head": id, "second": id}: the second node is the one with the custom resource."""
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps({('second' if 'second_node' in n['Resources'] else 'head'): n['NodeID'] "
            "for n in ray.nodes() if n['Alive']}))" % address)
    out = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    ids = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(ids) == {"head", "second"}, ids
    return ids


def _run_grid(cluster: dict, *args: str, timeout: int = 240, env: dict | None = None):
    cwd = cluster["tmp"] / "driver"
    return subprocess.run([PY, RUN_GRID, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**cluster["env"], **(env or {})})


def _sweep_args(cluster: dict, name: str, storage: Path, mlflow_uri: str, *extra: str) -> list[str]:
    return ["--cluster", "auto", "--dataset", "synthetic", "--preset", "quick", "--name", name,
            "--storage", str(storage), "--mlflow-uri", mlflow_uri, "--cpus-per-trial", "1", *extra]


def _runs(uri: str, name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    assert exp is not None, f"no MLflow experiment {name}"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _trial_runs(runs, stage):
    return [r for r in runs if r.data.tags.get("kind") == "trial" and r.data.tags.get("stage") == stage]


def _check_quick_sweep_in_mlflow(uri: str, name: str):
    client, runs = _runs(uri, name)
    for stage, n in QUICK_TRIALS.items():
        trials = _trial_runs(runs, stage)
        assert len(trials) == n, (stage, len(trials))
        assert all(r.info.status == "FINISHED" for r in trials), [r.info.status for r in trials]
    summary = [r for r in runs if r.data.tags.get("kind") == "summary"]
    assert len(summary) == 1
    assert "customer-churn.linear.PF.test.roc_auc_mean" in summary[0].data.metrics
    arts = {a.path for a in client.list_artifacts(summary[0].info.run_id)}
    assert {"trials.csv", "results.csv", "results.md"} <= arts  # uploaded to the server's artifact store
    pre = _trial_runs(runs, "pretrain")[0]
    assert [a.path for a in client.list_artifacts(pre.info.run_id, "checkpoint")] == ["checkpoint/backbone.pt"]
    return client, runs


# --- the 2-node sweep ------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_node_sweep(ray_cluster, mlflow_server):
    storage = ray_cluster["shared"] / "ray"
    t0 = time.time()
    # Pretraining trials long enough that the second node's actor is up before the head's
    # trial ends: Tune (reuse_actors) hands a pending trial the head's freed actor and drops
    # one still starting elsewhere, so trials shorter than an actor's start-up can all land
    # on the head and leave nothing for test_trials_ran_on_both_nodes to see.
    out = _run_grid(ray_cluster,
                    *_sweep_args(ray_cluster, "two-node", storage, mlflow_server["uri"], "--pretrain-steps", "150"),
                    env={"RAY_ADDRESS": ray_cluster["address"]})
    return out, storage, time.time() - t0


def test_quick_sweep_on_two_node_cluster(ray_cluster, mlflow_server, two_node_sweep):
    out, storage, wall = two_node_sweep
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"connected to Ray cluster at {ray_cluster['address']} (RAY_ADDRESS): 2 node(s)" in out.stdout
    _check_quick_sweep_in_mlflow(mlflow_server["uri"], "two-node")
    # Tune results and pretraining checkpoints are in the shared storage
    assert list((storage / "two-node-pretrain").glob("*/checkpoint_*/backbone.pt"))
    assert (storage / "two-node-finetune").is_dir()
    print(f"two-node quick sweep: {wall:.0f}s")


def _node_of_pid(tmp: Path) -> dict[int, str]:
    """pid -> node id of every Ray worker process of the test cluster (Ray's own logs)."""
    found = {}
    for log in (tmp / "ray").glob("session_*/logs/python-core-worker-*_*.log"):
        pid = int(log.stem.rsplit("_", 1)[1])
        m = re.search(r"node_id=([0-9a-f]+)", log.read_text(errors="replace"))
        if m:
            found[pid] = m.group(1)
    return found


def test_trials_ran_on_both_nodes(ray_cluster, mlflow_server, two_node_sweep):
    out, _, _ = two_node_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = _runs(mlflow_server["uri"], "two-node")
    trials = _trial_runs(runs, "pretrain") + _trial_runs(runs, "finetune")
    where = _node_of_pid(ray_cluster["tmp"])
    nodes = {}
    for r in trials:
        pid = int(r.data.metrics["pid"])  # Tune reports the trial's pid; the logger records it
        assert pid in where, (r.data.tags["trial_key"], pid)
        nodes[r.data.tags["trial_key"]] = where[pid]
        assert r.data.tags["node_id"] == where[pid]  # recorded by the trial itself
        assert r.data.tags.get("node_ip") == "127.0.0.1"  # added by Tune to every result
    assert set(nodes.values()) == set(ray_cluster["nodes"].values()), nodes


def test_graph_cache_is_shared_and_built_once(ray_cluster, two_node_sweep):
    out, storage, _ = two_node_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    cache = storage / "cache"
    assert f"shared graph cache {cache}" in out.stdout
    key = re.search(r"run_grid: dataset synthetic \(([0-9a-f]+)\)", out.stdout).group(1)
    assert [p.name for p in cache.iterdir()] == [f"graph-{key}"]  # one build, no leftovers
    assert not (ray_cluster["tmp"] / "driver-cache").exists()


# --- choosing the cluster ----------------------------------------------------------------
_DESCRIBE = ("import sys; from sweeps.cluster import connect; "
             "print(connect(sys.argv[1]).describe())")


def test_auto_finds_a_head_started_with_ray_start(ray_cluster):
    env = {k: v for k, v in ray_cluster["env"].items() if k != "RAY_ADDRESS"}
    out = subprocess.run([PY, "-c", _DESCRIBE, "auto"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (f"connected to Ray cluster at {ray_cluster['address']} "
            "(head started with `ray start` on this machine): 2 node(s)") in out.stdout


def test_auto_without_a_cluster_and_local_start_a_local_one(ray_cluster):
    # Another Ray temp root holds no `ray start` record; the raylets of the test cluster and
    # of other programs' ray.init() are running here all the same and must not be picked up.
    other = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    env = {k: v for k, v in ray_cluster["env"].items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(other)
    code = ("import os, sys; from sweeps.cluster import connect\n"
            "print(connect('auto', num_cpus=1).describe(), flush=True)\n"
            "os.environ['RAY_ADDRESS'] = sys.argv[1]  # a running cluster: `local` ignores it\n"
            "print(connect('local', num_cpus=1).describe(), flush=True)\n"
            "import ray; ray.shutdown()")
    try:
        out = subprocess.run([PY, "-c", code, ray_cluster["address"]], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr[-2000:]
        lines = out.stdout.strip().splitlines()
        assert re.match(r"started local Ray at \S+ \(no running Ray cluster found\): 1 node\(s\)", lines[0]), lines
        assert re.match(r"started local Ray at \S+ \(--cluster local\): 1 node\(s\)", lines[1]), lines
    finally:
        kill_stragglers(str(other))
        shutil.rmtree(other, ignore_errors=True)


def test_inside_a_ray_job_the_drivers_env_wins(ray_cluster, mlflow_server):
    """`ray job submit` entrypoints get the job's runtime_env in their own environment and
    Ray refuses a ray.init runtime_env repeating its keys; the moved cache must still win."""
    storage = ray_cluster["shared"] / "job-case"
    storage.mkdir()
    job_cache = str(ray_cluster["tmp"] / "job-cache")
    job = {"runtime_env": {"env_vars": {"RELCORE_CACHE_DIR": job_cache, "RELCORE_SAME": "1"}}}
    code = ("import os, sys, ray; from sweeps.cluster import connect\n"
            "info = connect(sys.argv[1], storage=sys.argv[2], mlflow_uri=sys.argv[3])\n"
            "f = ray.remote(num_cpus=0)(lambda: [os.environ.get(k) for k in ('RELCORE_CACHE_DIR', 'RELCORE_SAME')])\n"
            "print(info.cache_dir, *ray.get(f.remote()))")
    env = {**ray_cluster["env"], "RAY_JOB_CONFIG_JSON_ENV_VAR": json.dumps(job),
           "RELCORE_CACHE_DIR": job_cache, "RELCORE_SAME": "1"}
    out = subprocess.run([PY, "-c", code, ray_cluster["address"], str(storage), mlflow_server["uri"]],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    cache = str(storage / "cache")
    assert out.stdout.split() == [cache, cache, "1"], out.stdout


def test_cluster_configs_start_ray_and_call_the_sweep():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    launcher = yaml.safe_load((REPO / "cluster" / "ray" / "relcore-aws.yaml").read_text())
    validate_config(prepare_config(launcher))  # Ray's own schema for `ray up`
    assert {"cpu_worker", "gpu_worker"} <= set(launcher["available_node_types"])
    assert any('pip install -q -e ".[test,minilm]"' in c for c in launcher["setup_commands"])
    job = yaml.safe_load((REPO / "cluster" / "k8s" / "relcore-rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    assert "sweeps/run_grid.py --cluster auto" in job["spec"]["entrypoint"]
    groups = {g["groupName"] for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    assert groups == {"cpu", "gpu"}
    for script in sorted((REPO / "cluster" / "slurm").glob("*.s*")):
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0, script
    assert "run_grid.py\" --cluster auto" in (REPO / "cluster" / "slurm" / "relcore-sweep.sbatch").read_text()


# --- refusals ----------------------------------------------------------------------------
def _last_error(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert lines, out.stdout[-2000:]
    return lines[-1]


def test_sqlite_mlflow_on_multi_node_cluster_refused_before_anything(ray_cluster):
    tmp = ray_cluster["tmp"] / "sqlite-case"
    db = tmp / "mlruns.db"
    out = _run_grid(ray_cluster, *_sweep_args(ray_cluster, "sqlite", tmp / "ray", f"sqlite:///{db}"),
                    env={"RAY_ADDRESS": ray_cluster["address"]}, timeout=120)
    last = _last_error(out)
    assert out.returncode == 2 and last.startswith("run_grid: error:"), last
    assert "--mlflow-uri http://HOST:PORT" in last
    assert not db.exists()
    assert not list((tmp / "ray").glob("sqlite-*"))  # no trial started, no Tune state written


def _connect_error(cluster: dict, *args: str, env: dict | None = None, timeout: int = 120):
    code = ("import sys\nfrom relcore.errors import RelcoreError\nfrom sweeps.cluster import connect\n"
            "try:\n    connect(sys.argv[1], storage=sys.argv[2] or None, mlflow_uri=sys.argv[3] or None)\n"
            "except RelcoreError as exc:\n    print(exc); sys.exit(2)\n")
    t0 = time.time()
    out = subprocess.run([PY, "-c", code, *args], env={**cluster["env"], **(env or {})}, cwd=REPO,
                         capture_output=True, text=True, timeout=timeout)
    return out, time.time() - t0


def test_storage_not_shared_is_refused_naming_the_node(ray_cluster, mlflow_server):
    if not ray_cluster["private_view"]:
        pytest.skip("needs `unshare --mount` (root) to give the second node a private directory")
    storage = ray_cluster["local"] / "ray"
    storage.mkdir(exist_ok=True)
    out, _ = _connect_error(ray_cluster, ray_cluster["address"], str(storage), mlflow_server["uri"])
    assert out.returncode == 2, out.stdout + out.stderr[-2000:]
    msg = out.stdout.strip().splitlines()[-1]
    second = ray_cluster["nodes"]["second"][:12]
    assert f"--storage {storage} is not shared with node 127.0.0.1 ({second})" in msg, msg
    assert list(storage.iterdir()) == []  # the probe file is removed again


def test_storage_not_shared_refused_by_run_grid(ray_cluster, mlflow_server):
    if not ray_cluster["private_view"]:
        pytest.skip("needs `unshare --mount` (root) to give the second node a private directory")
    storage = ray_cluster["local"] / "ray2"
    out = _run_grid(ray_cluster,
                    *_sweep_args(ray_cluster, "unshared", storage, mlflow_server["uri"]),
                    env={"RAY_ADDRESS": ray_cluster["address"]}, timeout=180)
    last = _last_error(out)
    assert out.returncode == 2 and last.startswith("run_grid: error: --storage"), last
    assert ray_cluster["nodes"]["second"][:12] in last
    from mlflow.tracking import MlflowClient

    assert MlflowClient(mlflow_server["uri"]).get_experiment_by_name("unshared") is None
    assert not list(storage.glob("unshared-*"))


def test_unreachable_address_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    from sweeps.run_grid import main

    monkeypatch.chdir(tmp_path)
    port = free_port()  # nothing listens there
    t0 = time.time()
    assert main(["--cluster", f"127.0.0.1:{port}", "--dataset", "synthetic", "--preset", "quick",
                 "--storage", str(tmp_path / "ray"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("run_grid: error: Ray cluster at 127.0.0.1:") and "unreachable" in err[0]
    assert time.time() - t0 < 60
    assert not (tmp_path / "m.db").exists()


def test_a_port_that_is_not_ray_fails_within_bound(mlflow_server, tmp_path):
    hostport = mlflow_server["uri"].split("//", 1)[1]  # an HTTP server, not a Ray GCS
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
           "RELCORE_RAY_CONNECT_TIMEOUT_S": "6",  # the GCS handshake bound, as a user sets it
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # dial 127.0.0.1 as is
    t0 = time.time()
    out = subprocess.run([PY, RUN_GRID, "--cluster", hostport, "--dataset", "synthetic", "--preset", "quick",
                          "--storage", str(tmp_path / "ray"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr[-2000:]
    assert f"no Ray GCS answered at {hostport} within 6s" in err[0], err
    assert time.time() - t0 < 60
    assert not (tmp_path / "m.db").exists()


@pytest.mark.parametrize("address,needle", [
    ("http://127.0.0.1:8265", "is a dashboard (job submission) address"),
    ("nonsense", "bad cluster address 'nonsense'"),
])
def test_bad_ray_address_in_environment(tmp_path, monkeypatch, capsys, address, needle):
    from sweeps.run_grid import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", address)
    assert main(["--cluster", "auto", "--dataset", "synthetic", "--preset", "quick",
                 "--storage", str(tmp_path / "ray"), "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_wrong_token_is_a_clear_error(ray_cluster):
    wrong = ray_cluster["tmp"] / "wrong-token"
    wrong.write_text(secrets.token_hex(32))
    out, took = _connect_error(ray_cluster, ray_cluster["address"], "", "",
                               env={"RAY_AUTH_TOKEN_PATH": str(wrong)})
    assert out.returncode == 2, out.stderr[-2000:]
    assert "refused this client's authentication" in out.stdout and took < 60


# --- SLURM ------------------------------------------------------------------------------
@pytest.mark.skipif(os.environ.get("RELCORE_SLURM_TEST") != "1",
                    reason="SLURM test off: set RELCORE_SLURM_TEST=1 with a SLURM cluster up "
                           "(.ci/run starts one with .ci/start-slurm.sh)")
def test_sbatch_quick_sweep(mlflow_server):
    assert shutil.which("sbatch"), "RELCORE_SLURM_TEST=1 but sbatch is not installed"
    tmp = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    raytmp = tmp / "r"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "RELCORE_"))}
    env.update({"RELCORE_REPO": str(REPO), "RELCORE_PYTHON": PY, "RELCORE_CACHE_DIR": str(tmp / "cache"),
                "RAY_HEAD_IP": "127.0.0.1", "RAY_PORT": str(free_port()), "RAY_TMPDIR": str(raytmp),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray listens on 127.0.0.1 only
                "RAY_START_TIMEOUT": "120"})
    cmd = ["sbatch", "--parsable", "--wait", "--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=2",
           "--time=10", f"--chdir={tmp}", f"--output={tmp}/job-%j.out", str(SBATCH_SCRIPT),
           *["--dataset", "synthetic", "--preset", "quick", "--name", "slurm", "--storage", str(tmp / "ray"),
             "--mlflow-uri", mlflow_server["uri"], "--cpus-per-trial", "1"]]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        subprocess.run(["scancel", "--name=relcore-sweep"], timeout=30)
        pytest.fail(f"sbatch --wait did not finish in 480s: {stderr}")
    finally:
        kill_stragglers(str(raytmp))
    job = stdout.strip().splitlines()[0].split(";")[0] if stdout.strip() else "?"
    logs = list(tmp.glob("job-*.out"))
    text = logs[0].read_text() if logs else ""
    try:
        assert proc.returncode == 0, f"job {job}: rc {proc.returncode} {stderr}\n{text[-4000:]}"
        state = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30)
        assert "JobState=COMPLETED" in state.stdout, state.stdout
        assert f"connected to Ray cluster at 127.0.0.1:{env['RAY_PORT']} (RAY_ADDRESS): 1 node(s)" in text, text
        assert "relcore-sweep: Ray stopped; exit status 0" in text, text[-2000:]
        _check_quick_sweep_in_mlflow(mlflow_server["uri"], "slurm")
        assert not _pids_with(str(raytmp)), "Ray processes of the SLURM job survived it"
        print(f"SLURM job {job}: quick sweep in {time.time() - t0:.0f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
