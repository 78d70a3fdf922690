"""The main job as users run it: a real local Ray, a real SQLite MLflow store, the
synthetic database, ``python sweeps/run_grid.py`` in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sweeps import aggregate, trials

REPO = Path(__file__).resolve().parents[1]
RUN_GRID = str(REPO / "sweeps" / "run_grid.py")
QUICK_TRIALS = {"pretrain": 2, "finetune": 16}  # 2 pretrain; 2 tasks x (2 B + 2 R + 2 P + 2 PF)


def sweep_cmd(tmp: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, RUN_GRID, "--cluster", "local", "--num-cpus", "2", "--dataset", "synthetic",
            "--preset", "quick", "--name", name, "--storage", str(tmp / "ray"),
            "--mlflow-uri", f"sqlite:///{tmp / 'mlruns.db'}", *extra]


def run_sweep(tmp: Path, name: str, *extra: str, env: dict | None = None, timeout: int = 600):
    return subprocess.run(sweep_cmd(tmp, name, *extra), cwd=tmp, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def runs_of(tmp: Path, name: str):
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns.db'}")
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def reported_trials(stage_dir: Path) -> list[Path]:
    """Trials of a running stage that reported at least once, read from Tune's files.

    Polling the MLflow store instead would race the sweep: a client opening the SQLite
    file before the sweep has created its tables creates them too.
    """
    return [p for p in stage_dir.glob("*/progress.csv") if len(p.read_text().splitlines()) >= 2]


def trial_runs(runs, stage):
    return [r for r in runs if r.data.tags.get("kind") == "trial" and r.data.tags.get("stage") == stage]


FAILS_ONCE = {"finetune": "customer-rating-PF-linear-L2-sum-c0.2-s0", "pretrain": "linear-L2-mean-c0.2-s0"}


@pytest.fixture(scope="module")
def quick_sweep(tmp_path_factory):
    """One quick sweep with a fine-tuning trial made to fail at every start (retried once,
    in vain) and a trial of each stage made to fail once, after its step-10 evaluation
    (retried from there)."""
    tmp = tmp_path_factory.mktemp("sweep")
    failing = "customer-churn-B-linear-L2-mean-s0"
    out = run_sweep(tmp, "quick", "--max-failures", "1",
                    env={"RELCORE_SWEEP_FAIL_KEY": failing,
                         "RELCORE_SWEEP_FAIL_ONCE_KEYS": ",".join(FAILS_ONCE.values())})
    return tmp, out, failing


def test_quick_preset_end_to_end(quick_sweep):
    tmp, out, failing = quick_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    assert "started local Ray" in out.stdout
    client, runs = runs_of(tmp, "quick")
    for stage, n in QUICK_TRIALS.items():
        assert len(trial_runs(runs, stage)) == n
        parents = [r for r in runs if r.data.tags.get("kind") == "stage" and r.data.tags.get("stage") == stage]
        assert len(parents) == 1
        assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in trial_runs(runs, stage))
        # wall time kept logged (tracking.StageClock): 0 when the new stage began, then its wall
        walls = sorted(client.get_metric_history(parents[0].info.run_id, "wall_s"), key=lambda m: m.timestamp)
        assert walls[0].value == 0.0 and parents[0].data.metrics["wall_s"] == walls[-1].value > 0
    pre = trial_runs(runs, "pretrain")[0]
    assert pre.data.params["backbone.table_model"] == "linear"
    reasons = {r.data.tags["trial_key"]: r.data.tags["stop_reason"] for r in runs if r.data.tags.get("kind") == "trial"}
    assert reasons.pop(failing) == "error"  # every other trial ran its 20 steps (patience 3 > 2 evaluations)
    assert set(reasons.values()) == {"max_steps"}, reasons
    assert [a.path for a in client.list_artifacts(pre.info.run_id, "checkpoint")] == ["checkpoint/backbone.pt"]
    assert len(client.get_metric_history(pre.info.run_id, "val/loss")) >= 2  # a history, not one value
    for run in trial_runs(runs, "pretrain") + trial_runs(runs, "finetune"):
        if run.data.tags["trial_key"] != failing:  # the worker's memory at each evaluation
            assert 0.1 < run.data.metrics["rss_gib"] < 8, run.data.tags["trial_key"]

    summary = [r for r in runs if r.data.tags.get("kind") == "summary"]
    assert len(summary) == 1
    # marked as model training, so that `mlflow ui` opens the experiment on its runs table
    assert client.get_experiment_by_name("quick").tags["mlflow.experimentKind"] == "custom_model_development"
    metrics = summary[0].data.metrics
    for regime in ("B", "P", "PF", "R"):
        assert f"customer-churn.linear.{regime}.test.roc_auc_mean" in metrics
        assert f"customer-rating.linear.{regime}.val.mae_std" in metrics
    arts = {a.path for a in client.list_artifacts(summary[0].info.run_id)}
    assert {"trials.csv", "results.csv", "results.md", "regimes.png", "pretrain_loss.png",
            "training_time.png"} <= arts
    local = client.download_artifacts(summary[0].info.run_id, "results.csv", str(tmp))
    results = pd.read_csv(local)
    assert list(results.columns) == ["dataset", "task", "backbone", "regime", "protocol", "db_cut", "batch_order",
                                     "split", "metric", "mean", "std", "n"]
    assert set(results.protocol) == {"quick"} and set(results.db_cut) == {"test"}
    # trials.csv: one row per finished fine-tuning trial, and results.csv is exactly its top 5
    table = trials.read(client.download_artifacts(summary[0].info.run_id, "trials.csv", str(tmp)))
    assert len(table) == QUICK_TRIALS["finetune"] - 1 and failing not in set(table.key)
    assert set(table.regime) == {"B", "P", "PF", "R"} and set(table.stop_reason) == {"max_steps"}
    assert (table.steps == 20).all() and (table.seconds > 0).all()
    pf = table[table.regime == "PF"].iloc[0]
    assert (pf.layers, pf.aggr, pf.corruption, pf.protocol, pf.db_cut) == (2, pf.key.split("-")[-3], 0.2,
                                                                          "quick", "test")
    assert table[table.regime.isin(["B", "R"])].corruption.isna().all()
    assert (table.val == [r[f"val/{r.metric}"] for _, r in table.iterrows()]).all()
    pd.testing.assert_frame_equal(aggregate.top_k(table), results, check_dtype=False)
    assert "| B | P | P&F | R |" in (tmp / "runs" / "quick" / "results.md").read_text()
    assert "P − R" in (tmp / "runs" / "quick" / "results.md").read_text()
    churn_b = results[(results.task == "customer-churn") & (results.regime == "B") & (results.metric == "roc_auc")]
    assert set(churn_b["n"]) == {1}  # the failed B trial is not aggregated
    assert metrics["sweep.wall_s"] > 0 and 0 <= metrics["sweep.overhead_share"] < 1


def test_failing_trial_is_marked_failed_and_sweep_goes_on(quick_sweep):
    tmp, out, failing = quick_sweep
    _, runs = runs_of(tmp, "quick")
    ft = trial_runs(runs, "finetune")
    failed = [r for r in ft if r.info.status == "FAILED"]
    assert [r.data.tags["trial_key"] for r in failed] == [failing]
    assert "injected failure" in failed[0].data.tags["error"]
    assert sum(r.info.status == "FINISHED" for r in ft) == QUICK_TRIALS["finetune"] - 1


@pytest.mark.parametrize("stage,evaluations", [("pretrain", [0, 10, 20]), ("finetune", [10, 20])])
def test_failed_trial_continues_from_its_last_evaluation(quick_sweep, stage, evaluations):
    """Tune retries a trial that failed after its step-10 evaluation from the checkpoint
    that evaluation reported (the loop's resumable state): steps 1-10 are not run again,
    so each evaluation step is logged once and the trial ends at its last step."""
    tmp, out, _ = quick_sweep
    key = FAILS_ONCE[stage]
    client, runs = runs_of(tmp, "quick")
    run = next(r for r in trial_runs(runs, stage) if r.data.tags["trial_key"] == key)
    assert run.info.status == "FINISHED", run.data.tags
    steps = [int(m.value) for m in sorted(client.get_metric_history(run.info.run_id, "step"),
                                          key=lambda m: m.timestamp)]
    assert steps == evaluations, steps  # a restart from scratch would log step 10 twice
    assert run.data.metrics["steps"] == 20
    # the injected failure happened: Tune keeps the first attempt's error file
    errors = list((tmp / "ray" / f"quick-{stage}").glob(f"*{key.replace('.', '_')}*/error.txt"))
    assert errors and "injected failure" in errors[0].read_text()
    # a finished trial's checkpoint keeps what it finished with, not its loop state
    ckpt = sorted((errors[0].parent).glob("checkpoint_*"))[-1]
    assert {p.name for p in ckpt.iterdir()} == ({"backbone.pt"} if stage == "pretrain" else set())
    states = list((tmp / "ray").glob("quick-*/*/checkpoint_*/state.pt"))
    assert states == [], states


def test_progress_line_names_each_tasks_best_validation_trial(quick_sweep):
    """Every evaluation carries ``monitor_best``, so the progress line's best is right for a
    trial the patience stopper ended too; a trial's closing summary sits at its last step."""
    tmp, out, _ = quick_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    client, runs = runs_of(tmp, "quick")
    best = {}
    for r in trial_runs(runs, "finetune"):
        if r.info.status != "FINISHED":
            continue
        history = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "monitor_best")}
        steps = int(r.data.metrics["steps"])
        assert max(history) == steps, (r.data.tags["trial_key"], sorted(history), steps)
        evaluated = [m.step for m in client.get_metric_history(r.info.run_id, "monitor")]
        assert set(evaluated) <= set(history), r.data.tags["trial_key"]
        task, higher = r.data.tags["task"], "best/val/roc_auc" in r.data.metrics
        value = r.data.metrics["best/val/roc_auc" if higher else "best/val/mae"]
        if task not in best or (value > best[task][0] if higher else value < best[task][0]):
            best[task] = (value, r.data.tags["trial_key"])
    last = [line for line in out.stderr.splitlines() if line.startswith("[finetune]")][-1]
    for task, (value, key) in best.items():
        assert f"best {task}: {value:.4f} ({key})" in last, (last, best)


def test_status_reads_the_sweep_back_from_mlflow(quick_sweep):
    """sweeps/status.py's top-5 table over finished trials equals the sweep's own results.csv."""
    tmp, out, _ = quick_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    status = subprocess.run([sys.executable, str(REPO / "sweeps" / "status.py"), "--name", "quick",
                             "--mlflow-uri", uri, "--out", str(tmp / "status"), "--trials"],
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr[-3000:]
    lines = status.stdout.splitlines()
    pre = next(line.split() for line in lines if line.startswith("pretrain"))
    ft = next(line.split() for line in lines if line.startswith("finetune"))
    # stage planned finished running failed mean_busy_s wall_s overhead_share
    assert pre[1:5] == ["2", "2", "0", "0"] and ft[1:5] == ["16", "15", "0", "1"], lines
    assert float(ft[6]) > 0 and 0 <= float(ft[7]) < 1, lines
    listed = [line.split() for line in lines if line.split()[:1] in (["pretrain"], ["finetune"])
              and len(line.split()) >= 6 and line.split()[2] in ("FINISHED", "FAILED", "RUNNING")]
    assert len(listed) == 18 and sum(row[2] == "FAILED" for row in listed) == 1, lines
    memory = next(line for line in lines if line.startswith("worker memory"))
    gib = dict(re.findall(r"(pretrain L2|finetune L2) ([\d.]+) GiB", memory))
    assert gib.keys() == {"pretrain L2", "finetune L2"} and all(0.1 < float(v) < 8 for v in gib.values()), memory
    ours = pd.read_csv(tmp / "status" / "results.csv")
    theirs = pd.read_csv(tmp / "runs" / "quick" / "results.csv")
    key = ["task", "backbone", "regime", "split", "metric"]
    merged = ours.merge(theirs, on=key, suffixes=("", "_sweep"))
    assert len(merged) == len(theirs) == len(ours)
    assert (merged["n"] == merged["n_sweep"]).all()
    assert ((merged["mean"] - merged["mean_sweep"]).abs() < 1e-9).all()
    # the trial rows rebuilt from MLflow are the sweep's own trials.csv
    rebuilt, own = (trials.read(d / "trials.csv") for d in (tmp / "status", tmp / "runs" / "quick"))
    pd.testing.assert_frame_equal(rebuilt[trials.COLUMNS[:-3]], own[trials.COLUMNS[:-3]], check_dtype=False)

    missing = subprocess.run([sys.executable, str(REPO / "sweeps" / "status.py"), "--name", "nope",
                              "--mlflow-uri", uri], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no sweep named 'nope'" in missing.stderr
    nowhere = f"sqlite:///{tmp / 'nowhere.db'}"
    no_store = subprocess.run([sys.executable, str(REPO / "sweeps" / "status.py"), "--name", "quick",
                               "--mlflow-uri", nowhere], capture_output=True, text=True, timeout=120)
    assert no_store.returncode == 2 and "no MLflow store" in no_store.stderr
    assert not (tmp / "nowhere.db").exists()
    (tmp / "notes.db").write_text("not a database\n")
    for args, needle in ((["--mlflow-uri", f"sqlite:///{tmp / 'notes.db'}"], "is not an SQLite database"),
                         (["--mlflow-uri", "nosuch://x"], "MLflow store nosuch://x cannot be opened"),
                         (["--mlflow-uri", uri, "--out", str(tmp / "notes.db")], "cannot write to --out"),
                         (["--mlflow-uri", uri, "--slots", "-1"], "--slots must be >= 0")):
        bad = subprocess.run([sys.executable, str(REPO / "sweeps" / "status.py"), "--name", "quick", *args],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and needle in bad.stderr.strip().splitlines()[-1], (args, bad.stderr[-2000:])
        assert "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert (tmp / "notes.db").read_text() == "not a database\n"


def test_progress_page_rewrites_only_its_block(quick_sweep):
    """sweeps/progress_page.py fills the marked block from the MLflow store, keeps the
    author's text around it, and refuses a page without markers without touching it."""
    tmp, out, _ = quick_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    script = str(REPO / "sweeps" / "progress_page.py")
    uri = f"sqlite:///{tmp / 'mlruns.db'}"
    page = tmp / "page.md"
    page.write_text("# notes\n\n<!-- progress:begin -->\nstale\n<!-- progress:end -->\n\n## Reading\nmine\n")
    done = subprocess.run([sys.executable, script, "--name", "quick", "--mlflow-uri", uri, "--page", str(page),
                           "--csv", str(tmp / "partial.csv")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    text = page.read_text()
    assert text.startswith("# notes\n\n<!-- progress:begin -->\n") and text.endswith("<!-- progress:end -->\n\n## Reading\nmine\n")
    assert "stale" not in text
    assert "Pretraining: 2 of 2 trials finished (0 running, 0 failed)" in text
    assert "Fine-tuning: **15 of 16 trials finished (0 running, 1 failed)**" in text
    # not rel-f1's tasks: the sweep's own table, not the paper comparison
    assert "| customer-rating | MAE | Linear-SAGE |" in text and "paper val / test" not in text
    listed = [line for line in text.splitlines() if line.lstrip().startswith("customer-")]
    assert len(listed) == 16 and sum(" FAILED " in line for line in listed) == 1
    ours, theirs = pd.read_csv(tmp / "partial.csv"), pd.read_csv(tmp / "runs" / "quick" / "results.csv")
    key = ["task", "backbone", "regime", "split", "metric"]
    merged = ours.merge(theirs, on=key, suffixes=("", "_sweep"))
    assert len(merged) == len(theirs) and ((merged["mean"] - merged["mean_sweep"]).abs() < 1e-9).all()

    bare = tmp / "bare.md"
    bare.write_text("no markers here\n")
    refused = subprocess.run([sys.executable, script, "--name", "quick", "--mlflow-uri", uri, "--page", str(bare)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "progress:begin" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and bare.read_text() == "no markers here\n"
    before = page.read_text()
    for name, store in (("nope", uri), ("quick", f"sqlite:///{tmp / 'nowhere.db'}")):
        wrong = subprocess.run([sys.executable, script, "--name", name, "--mlflow-uri", store, "--page", str(page)],
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        assert ("no sweep named 'nope'" if name == "nope" else "no MLflow store") in wrong.stderr
    assert page.read_text() == before and not (tmp / "nowhere.db").exists()
    # an unwritable --csv: one line, and neither the page nor the csv is touched
    csv_before = (tmp / "partial.csv").read_bytes()
    blocked = subprocess.run([sys.executable, script, "--name", "quick", "--mlflow-uri", uri, "--page", str(page),
                              "--csv", str(tmp / "bare.md" / "partial.csv")], capture_output=True, text=True,
                             timeout=120)
    assert blocked.returncode == 2 and len(blocked.stderr.strip().splitlines()) == 1, blocked.stderr
    assert "cannot write" in blocked.stderr
    assert page.read_text() == before and (tmp / "partial.csv").read_bytes() == csv_before
    assert not list(tmp.glob("*.tmp"))


def test_a_sweep_fine_tunes_another_sweeps_checkpoints(quick_sweep):
    """--pretrained-from skips pretraining and fine-tunes the named sweep's checkpoints;
    the same checkpoint and seed give the same fine-tuning result as in that sweep. A
    source that lacks a trial of this grid, or pretrained it differently, is refused."""
    tmp, out, failing = quick_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    for extra, error in ((("--pretrained-from", "nope"), "no pretraining stage of sweep 'nope'"),
                         (("--pretrained-from", "quick", "--corruption", "0.4"),
                          "has no finished pretraining trial linear-L2-sum-c0.4-s0"),
                         (("--pretrained-from", "quick", "--pretrain-steps", "7"), "with other pretrain settings"),
                         (("--pretrained-from", "quick", "--db-cut", "full"), "with other dataset settings"),
                         (("--pretrained-from", "quick", "--search", "optuna"), "--search does not apply")):
        refused = run_sweep(tmp, "reuse", *extra, timeout=120)
        assert refused.returncode == 2 and error in refused.stderr, refused.stderr[-2000:]
        assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert not (tmp / "ray" / "reuse-finetune").exists()

    done = run_sweep(tmp, "reuse", "--pretrained-from", "quick", "--tasks", "customer-churn",
                     "--pretrain-time-limit", "60")  # a trial limit is no pretraining setting
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pretraining reused from sweep 'quick' (2 checkpoints)" in done.stdout
    _, runs = runs_of(tmp, "reuse")
    assert trial_runs(runs, "pretrain") == []
    parent = next(r for r in runs if r.data.tags.get("stage") == "pretrain" and r.data.tags.get("kind") == "stage")
    assert parent.data.params["pretrained_from"] == "quick" and parent.info.status == "FINISHED"
    ours = {r.data.tags["trial_key"]: r for r in trial_runs(runs, "finetune")}
    assert len(ours) == 8 and all(r.info.status == "FINISHED" for r in ours.values())  # 2 B + 2 R + 2 P + 2 PF
    _, source_runs = runs_of(tmp, "quick")
    theirs = {r.data.tags["trial_key"]: r for r in trial_runs(source_runs, "finetune")}
    for key, run in ours.items():
        if "-B-" in key or "-R-" in key:
            continue
        assert any(str(tmp / "ray" / "quick-pretrain") in v for v in run.data.params.values()), key
        assert run.data.metrics["best/val/roc_auc"] == pytest.approx(theirs[key].data.metrics["best/val/roc_auc"],
                                                                      abs=1e-6), key
    status = subprocess.run([sys.executable, str(REPO / "sweeps" / "status.py"), "--name", "reuse",
                             "--mlflow-uri", f"sqlite:///{tmp / 'mlruns.db'}"],
                            capture_output=True, text=True, timeout=120)
    pre = next(line.split() for line in status.stdout.splitlines() if line.startswith("pretrain"))
    assert pre[1:5] == ["0", "0", "0", "0"], status.stdout


def test_sigkill_then_resume_runs_each_trial_once(tmp_path):
    # 2 B and R seeds: 24 fine-tuning trials, so the stage is still running when the first one
    # has reported, on a fast idle host too (with 12 a fast host finished between two polls)
    extra = ("--seeds", "2")
    expected = {"pretrain": 2, "finetune": 24}
    proc = subprocess.Popen(sweep_cmd(tmp_path, "killed", *extra), cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600  # generous: a loaded host slows Ray's start and the trials
    try:
        while time.time() < deadline:  # kill as soon as a fine-tuning trial has reported
            time.sleep(0.2)
            if reported_trials(tmp_path / "ray" / "killed-finetune"):
                break
        else:
            pytest.fail("sweep never reached fine-tuning")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started, like a machine loss
        proc.wait()
    _, runs = runs_of(tmp_path, "killed")
    assert "summary" not in {r.data.tags.get("kind") for r in runs}, "the sweep finished before the kill"
    done_before = {r.data.tags["trial_key"]: r.info.run_id
                   for r in trial_runs(runs, "finetune") if r.info.status == "FINISHED"}
    cut = {r.info.run_id: "step" in r.data.metrics for r in trial_runs(runs, "finetune") if r.info.status == "RUNNING"}
    assert cut, "no fine-tuning trial was running at the kill"

    out = run_sweep(tmp_path, "killed", *extra, "--resume")
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = runs_of(tmp_path, "killed")
    for stage, n in expected.items():
        keys = Counter(r.data.tags["trial_key"] for r in trial_runs(runs, stage))
        assert len(keys) == n and set(keys.values()) == {1}, keys
        assert all(r.info.status == "FINISHED" for r in trial_runs(runs, stage))
    after = {r.data.tags["trial_key"]: r.info.run_id for r in trial_runs(runs, "finetune")}
    assert all(after[key] == run_id for key, run_id in done_before.items())  # finished trials not rerun
    # trials cut by the kill ran again in their own run; those that had reported say so
    attempts = {r.info.run_id: r.data.tags.get("attempts") for r in trial_runs(runs, "finetune")}
    assert all(attempts[run_id] == ("2" if reported else None) for run_id, reported in cut.items()), (cut, attempts)
    assert "interrupted" in out.stdout
    # the resumed run's progress counts the trials finished before the kill too
    assert f"[finetune] {expected['finetune']}/{expected['finetune']} finished (0 failed)" in out.stderr, \
        out.stderr[-2000:]
    assert sum(r.data.tags.get("kind") == "summary" for r in runs) == 1


def test_sigint_during_pretraining_stops_before_fine_tuning(tmp_path):
    """Ctrl-C makes Tune return early: the sweep must stop, not fine-tune partial checkpoints."""
    # one paper-preset pretraining trial (validation every 50 steps) and 4 short fine-tuning trials
    extra = ("--preset", "paper", "--backbones", "linear", "--layers", "2", "--aggr", "sum", "--corruption", "0.2",
             "--tasks", "customer-churn", "--seeds", "1", "--pretrain-steps", "300", "--finetune-steps", "20")
    proc = subprocess.Popen(sweep_cmd(tmp_path, "sigint", *extra), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # wait until the pretraining trial has reported
        time.sleep(1)
        if reported_trials(tmp_path / "ray" / "sigint-pretrain"):
            break
    else:
        proc.kill()
        pytest.fail("pretraining never reported")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0, (out[-3000:], err[-3000:])
    assert "pretrain stage interrupted" in err and "--resume" in err, err[-2000:]
    _, runs = runs_of(tmp_path, "sigint")
    assert trial_runs(runs, "finetune") == [] and not (tmp_path / "ray" / "sigint-finetune").exists()
    stage = next(r for r in runs if r.data.tags.get("kind") == "stage" and r.data.tags.get("stage") == "pretrain")
    assert stage.info.status == "KILLED" and stage.data.metrics["wall_s"] > 0
    first_wall = stage.data.metrics["wall_s"]

    done = run_sweep(tmp_path, "sigint", *extra, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = runs_of(tmp_path, "sigint")
    for stage, n in {"pretrain": 1, "finetune": 4}.items():
        keys = Counter(r.data.tags["trial_key"] for r in trial_runs(runs, stage))
        assert len(keys) == n and set(keys.values()) == {1}, keys
    # the resumed stage's wall time includes the interrupted run's, so the share is a share
    stage = next(r for r in runs if r.data.tags.get("kind") == "stage" and r.data.tags.get("stage") == "pretrain")
    assert stage.info.status == "FINISHED" and stage.data.metrics["wall_s"] > first_wall
    assert 0 <= stage.data.metrics["overhead_share"] < 1


def test_a_worker_killed_for_memory_stops_the_stage_resumably(tmp_path):
    """Ray's memory monitor killing a trial's worker makes Tune raise out of fit(): the sweep
    must end on one line that names the cause and the remedy, and --resume must finish it."""
    extra = ("--backbones", "linear", "--layers", "2", "--aggr", "sum", "--corruption", "0.2",
             "--tasks", "customer-churn", "--seeds", "1")
    # a 2 % threshold is below what the driver and Ray's own processes already use
    starved = run_sweep(tmp_path, "oom", *extra,
                        env={"RAY_memory_usage_threshold": "0.02", "RAY_memory_monitor_refresh_ms": "100"})
    last = starved.stderr.strip().splitlines()[-1]
    assert starved.returncode == 2, starved.stderr[-3000:]
    assert last.startswith("run_grid: error: pretrain stage interrupted (OutOfMemoryError: "), last
    assert "--memory-per-trial" in last and last.endswith("--resume"), last
    _, runs = runs_of(tmp_path, "oom")
    stage = next(r for r in runs if r.data.tags.get("kind") == "stage" and r.data.tags.get("stage") == "pretrain")
    assert stage.info.status == "KILLED" and "wall_s" in stage.data.metrics

    done = run_sweep(tmp_path, "oom", *extra, "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = runs_of(tmp_path, "oom")
    for stage_name, n in {"pretrain": 1, "finetune": 4}.items():
        finished = [r for r in trial_runs(runs, stage_name) if r.info.status == "FINISHED"]
        assert sorted({r.data.tags["trial_key"] for r in finished}) == sorted(
            r.data.tags["trial_key"] for r in finished) and len(finished) == n, stage_name


def test_why_tune_failed_is_one_short_line():
    """What the stage's error line says for an exception out of Tune: its first line, cut
    to a width, or the out-of-memory kill it came from, with the remedy."""
    from ray.exceptions import OutOfMemoryError

    from sweeps.sweep import _why_tune_failed

    assert _why_tune_failed(RuntimeError("boom\nsecond line")) == "RuntimeError: boom"
    assert len(_why_tune_failed(RuntimeError("x" * 500))) == 200
    try:
        try:
            raise OutOfMemoryError(  # Ray's first line, as in the rel-f1 grid's log
                "1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: "
                "192.0.2.2, ID: de89e9878988e9e78d3a994c0072f6e4fab758eb4cc935537de13990) was 22.36GB used / "
                "23.54GB limit (0.950056)\nOOM kill reason: ...")
        except OutOfMemoryError:
            raise KeyError("trial_00001")  # what Tune raised in the end-to-end run above
    except KeyError as exc:
        line = _why_tune_failed(exc)
    assert line == ("OutOfMemoryError: 1 worker(s) were killed due to the node running low on memory; "
                    "the node ran out of memory: give --memory-per-trial (GiB per trial) so that Ray runs "
                    "fewer trials at once"), line


def test_existing_sweep_needs_resume(quick_sweep):
    tmp, _, _ = quick_sweep
    out = run_sweep(tmp, "quick")
    assert out.returncode == 2 and "--resume" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("args,needle", [
    (["--tasks", "customer-nope"], "unknown task 'customer-nope'"),
    (["--layers", ""], "grid axis 'layers' is empty"),
    (["--layers", "4"], "bad layers value(s) [4]"),
    (["--corruption", "1.5"], "corruption must lie in (0, 1)"),
    (["--aggr", "max"], "bad aggr value(s) ['max']"),
    (["--dataset", "rel-nope"], "unknown dataset 'rel-nope'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--cluster", "127.0.0.1:9"], "unreachable"),
    (["--num-cpus", "-1"], "--num-cpus >= 1"),
    (["--gpus-per-trial", "-1"], "--gpus-per-trial and --memory-per-trial must be >= 0"),
    (["--cpus-per-trial", "3"], "a trial asks for 3 CPU / 0 GPU"),  # the local Ray has 2
    (["--gpus-per-trial", "64"], "but no node has that much: nodes have 2 CPU / "),
    (["--mlflow-uri", "nosuch://x"], "MLflow store nosuch://x cannot be opened"),
    (["--finetune-time-limit", "0"], "--finetune-time-limit must be > 0 seconds"),
    (["--finetune-seeds", "0"], "--finetune-seeds must be >= 1"),
])
def test_bad_input_refused_before_any_trial(tmp_path, monkeypatch, capsys, args, needle):
    from sweeps.run_grid import main  # in-process: same entry point, no interpreter start-up

    monkeypatch.chdir(tmp_path)
    assert main(sweep_cmd(tmp_path, "bad", *args)[2:]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("run_grid: error:") and needle in last, last
    assert not (tmp_path / "mlruns.db").exists()  # nothing was logged
    assert not list((tmp_path / "ray").glob("bad-*"))  # no trial started


def test_unwritable_storage(tmp_path, monkeypatch, capsys):
    from sweeps.run_grid import main

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = sweep_cmd(tmp_path, "bad")[2:-4] + ["--storage", str(blocker / "sub"),
                                               "--mlflow-uri", f"sqlite:///{tmp_path}/m.db"]
    assert main(argv) == 2
    assert "not writable" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "m.db").exists()


def test_optuna_search_explores_the_same_space_and_the_loops_honour_the_time_limits(tmp_path):
    """Optuna's trials log the grid's params. The time limits reach the loops, which own
    stopping: 1 s ends every pretraining trial before its step budget, and a fine-tuning
    limit above the 2-h default is the one its trials run under."""
    out = run_sweep(tmp_path, "optuna", "--search", "optuna", "--num-samples", "2", "--tasks", "customer-churn",
                    "--corruption", "0.2,0.4", "--pretrain-time-limit", "1", "--finetune-time-limit", "9000")
    assert out.returncode == 0, out.stderr[-3000:]
    _, runs = runs_of(tmp_path, "optuna")
    pre = trial_runs(runs, "pretrain")
    assert len(pre) == 2
    for r in pre:  # Optuna sampled the axes; each trial logs the same params as a grid trial
        assert r.data.params["pretrain.corruption"] in ("0.2", "0.4")
        assert r.data.params["backbone.layers"] == "2" and r.data.params["stage"] == "pretrain"
        assert r.data.params["pretrain.time_limit_s"] == "1.0"
        assert r.data.tags["stop_reason"] == "time_limit" and r.data.metrics["steps"] < 20  # the step budget
    for r in trial_runs(runs, "finetune"):
        assert r.data.params["finetune.time_limit_s"] == "9000.0" and r.data.tags["stop_reason"] == "max_steps"
    ft = trial_runs(runs, "finetune")
    checkpoints = {r.data.tags["pretrain_key"] for r in ft if r.data.tags["regime"] in ("P", "PF")}
    assert checkpoints == {r.data.tags["trial_key"] for r in pre}
    assert len(ft) == 2 + 2 + 2 * len(checkpoints) and all(r.info.status == "FINISHED" for r in ft)


def test_status_prices_unfinished_trials_by_backbone_and_depth(tmp_path):
    """A 3-layer fine-tuning trial costs several 2-layer ones: time left is priced per
    (stage, backbone, depth) group, and a group with no finished trial is named, not guessed."""
    from sweeps import status, tracking

    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("s")
    params = {"dataset": "rel-f1", "tasks": "driver-dnf",
              "grid": {"backbones": ("linear",), "layers": (2, 3), "aggr": ("sum",), "corruption": (0.2,),
                       "baseline_seeds": 2}}
    for stage in ("pretrain", "finetune"):
        tracking.stage_run(client, exp, stage, params)
    for key, seconds in (("driver-dnf-B-linear-L2-sum-s0", 100.0), ("driver-dnf-B-linear-L2-sum-s1", 200.0),
                         ("linear-L2-sum-c0.2-s0", 50.0), ("linear-L3-sum-c0.2-s0", 70.0)):
        stage = "finetune" if key.startswith("driver") else "pretrain"
        tags = {"kind": "trial", "stage": stage, "trial_key": key,
                ("table_model" if stage == "finetune" else "backbone"): "linear"}
        run = client.create_run(exp, tags=tags).info.run_id
        client.log_metric(run, "busy_s", seconds)
        client.set_terminated(run, "FINISHED")
    runs = status.SweepRuns(client, exp)
    stages = status.stage_table(runs)
    assert runs.dataset() == "rel-f1"
    # finetune: 1 task x (B and R 2 x 1 x 2 x 2 seeds + 2 x 2 checkpoints) = 12 trials, 6 per depth
    assert stages.set_index("stage").loc["finetune", "planned"] == 12
    seconds, unknown = status.time_left(runs, stages, runs.pretrain_params())
    assert seconds == pytest.approx((6 - 2) * 150.0)  # L2: 4 left at their mean; pretraining done
    assert unknown == ["finetune linear L3 (6 trials)"]


def test_restoring_a_trial_copies_its_checkpoint_or_starts_over(tmp_path, capsys):
    """A retried trial's loop reads its state from the checkpoint's files; a checkpoint
    that is gone makes it start over instead of failing every retry."""
    from ray import tune

    from sweeps.trainables import _restore

    ckpt = tmp_path / "checkpoint_000003"
    ckpt.mkdir()
    (ckpt / "state.pt").write_bytes(b"state")
    target = tmp_path / "work" / "state.pt"
    _restore(tune.Checkpoint.from_directory(str(ckpt)), {"state.pt": target, "backbone.pt": tmp_path / "b.pt"})
    assert target.read_bytes() == b"state" and not (tmp_path / "b.pt").exists()

    gone = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000004"))
    again = tmp_path / "again" / "state.pt"
    _restore(gone, {"state.pt": again})
    assert not again.exists()
    assert "is gone; the trial starts over" in capsys.readouterr().err


def test_merge_of_parts_is_the_sweeps_own_table_and_refuses_mixed_cells(quick_sweep):
    """sweeps/merge.py: the sweep's trials.csv cut into two parts merges back into exactly
    its results.csv; a cell mixing database cuts, a trial in two parts, or a file that is
    not a trials.csv is one line and exit 2, and the outputs stay as they were."""
    tmp, out, _ = quick_sweep
    assert out.returncode == 0, out.stderr[-3000:]
    script = [sys.executable, str(REPO / "sweeps" / "merge.py")]
    own = trials.read(tmp / "runs" / "quick" / "trials.csv")
    a, b = tmp / "part-a.csv", tmp / "part-b.csv"
    own[own.task == "customer-churn"].to_csv(a, index=False)
    own[own.task != "customer-churn"].to_csv(b, index=False)
    page = tmp / "merged.md"
    page.write_text("# parts\n<!-- merge:begin -->\n<!-- merge:end -->\nreading\n")
    done = subprocess.run([*script, str(a), str(b), "--csv", str(tmp / "merged.csv"), "--page", str(page),
                           "--against", f"own={tmp / 'runs' / 'quick' / 'results.csv'}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    merged, theirs = pd.read_csv(tmp / "merged.csv"), pd.read_csv(tmp / "runs" / "quick" / "results.csv")
    pd.testing.assert_frame_equal(merged, theirs)
    text = page.read_text()
    assert text.startswith("# parts\n<!-- merge:begin -->\nMerged by `sweeps/merge.py` from 2 part(s), 15 ")
    assert text.endswith("<!-- merge:end -->\nreading\n") and "P − R" in text
    # --against sets another results.csv beside the merged cells: here the sweep's own, so each pair is equal
    pairs = [line.split(" | ")[-2:] for line in text.splitlines()
             if line.startswith("| customer-") and "(n=" in line and "±" not in line]
    assert len(pairs) == 8 and all(x == y.rstrip(" |") for x, y in pairs), pairs

    full = own[own.task == "customer-churn"].assign(db_cut="full")
    full.to_csv(tmp / "part-full.csv", index=False)
    (tmp / "junk.csv").write_text("task,val\nx,1\n")
    for args, needle in (([a, tmp / "part-full.csv"], "mixes db_cuts full and test"),
                         ([a, a], "appears 2 times"),
                         ([tmp / "junk.csv"], "missing column(s) dataset"),
                         ([tmp / "none.csv"], "trials file not found")):
        bad = subprocess.run([*script, *map(str, args), "--csv", str(tmp / "merged.csv"), "--page", str(page)],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and needle in bad.stderr.strip().splitlines()[-1], (args, bad.stderr[-2000:])
        assert "Traceback" not in bad.stderr
    assert page.read_text() == text and pd.read_csv(tmp / "merged.csv").equals(merged)


def test_run_grid_options_are_the_sweeps_typed_options():
    """Every run_grid.py option is a SweepOptions field with the same default: the command
    line and the driver cannot drift apart."""
    from sweeps.run_grid import parse_args
    from sweeps.sweep import SweepOptions

    args = parse_args([])
    assert set(vars(args)) == set(SweepOptions.__dataclass_fields__)
    assert SweepOptions.from_namespace(args) == SweepOptions()
    assert SweepOptions.from_namespace(parse_args(["--time-col", "a.t", "--seeds", "2"])).time_col == ("a.t",)
