"""``relcore describe`` as a user runs it: real process, real data."""

from __future__ import annotations

import json
import subprocess
import sys


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relcore", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_describe_f1_json(f1_raw_dir):
    out = run_cli("describe", "rel-f1", "--raw-dir", f1_raw_dir, "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["rows"] == 97_606 and info["links"] == 227_716
    assert info["tables"]["results"] == 26_080 and len(info["tables"]) == 9
    assert {k: (v["train"], v["val"], v["test"]) for k, v in info["tasks"].items() if "train" in v
            and k.startswith("driver-") and k != "driver-circuit-compete"} == {
        "driver-dnf": (11_411, 566, 702), "driver-top3": (1_353, 588, 726),
        "driver-position": (7_453, 499, 760)}


def test_describe_human_readable(f1_raw_dir):
    out = run_cli("describe", "rel-f1", "--raw-dir", f1_raw_dir)
    assert out.returncode == 0, out.stderr
    assert "97,606 rows, 227,716 links" in out.stdout
    assert "fkey driverId -> drivers" in out.stdout


def _one_line_error(out: subprocess.CompletedProcess, needle: str) -> None:
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert needle in lines[-1] and lines[-1].startswith("relcore describe: error:")
    assert "Traceback" not in out.stderr


def test_describe_bad_inputs(tmp_path):
    _one_line_error(run_cli("describe", "rel-nope"), "unknown dataset 'rel-nope'")
    _one_line_error(run_cli("describe", "rel-f1", "--raw-dir", str(tmp_path / "missing")),
                    "raw directory not found")
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not a database")
    _one_line_error(run_cli("describe", f"sqlite:{bad}"), "as a SQLite database: file is not a database")
