"""The benchmark suite (benchmarks/run_all.py): the tiny run end to end, and its failure handling.

The tiny run exercises every part's script, the collection of their JSON files and the markdown;
its numbers are smoke-test numbers, so only their presence and sign are checked here.
"""

import argparse
import json
import math
import os
import sys
import time
import types
from pathlib import Path

import pytest

from benchmarks import run_all
from benchmarks.common import GOAL_STATUSES
from tests.scripts import REPO, run_script

# The suite's own limit is run_all.TIMEOUTS["tiny"] per part; this one catches a hang of the whole.
SUITE_TIMEOUT_S = 900
MACHINE = {
    "cpu_model": "test CPU",
    "usable_cpus": 2,
    "memory_gb": 4.0,
    "gpus": [],
    "tensorflow": "2",
    "keras": "3",
    "git_commit": "abc",
    "load_average": [1.0],
    "load_average_end": [1.0],
}


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    started = time.monotonic()
    result = run_script(
        REPO / "benchmarks" / "run_all.py", "--size", "tiny", "--out-dir", out_dir, timeout=SUITE_TIMEOUT_S, check=False
    )
    print(f"tiny suite: {time.monotonic() - started:.0f} s")
    return out_dir, result


@pytest.mark.e2e
def test_tiny_suite_records_every_part_with_positive_numbers(tiny_suite):
    out_dir, result = tiny_suite
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    suites = list(out_dir.glob("suite_tiny_*.json"))
    assert len(suites) == 1, suites
    suite = json.loads(suites[0].read_text())
    assert suite["size"] == "tiny"
    assert suite["machine"]["git_commit"] and suite["machine"]["libraries"]["tensorflow"]
    assert set(suite["parts"]) == set(run_all.PARTS)  # the JSON is written with sorted keys
    for name, part in suite["parts"].items():
        assert part["status"] == "ok", (name, part.get("error"), part.get("problems"))
        assert (out_dir / f"{name}.json").is_file(), name
        assert part["figures"], f"{name}: no numbers"
        for key, value in part["figures"].items():
            assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (name, key, value)
        for key, record in part["goals"].items():
            assert record["status"] in GOAL_STATUSES, (name, key, record)


@pytest.mark.e2e
def test_tiny_suite_writes_its_table_outside_the_tree(tiny_suite):
    out_dir, _ = tiny_suite
    table = (out_dir / "RESULTS_tiny.md").read_text()
    for part in run_all.PARTS.values():
        assert f"## {part.title}" in table
    assert "| part | goal | measured | status |" in table
    assert not (REPO / "benchmarks" / "RESULTS_tiny.md").exists()


def test_a_crashing_part_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    monkeypatch.setitem(run_all.PARTS, "pipeline", run_all.Part("1. Input pipeline", "no_such_script.py"))
    args = types.SimpleNamespace(size="tiny", real_ct=[], training_run=None, extra_options={})
    record = run_all.run_part("pipeline", args, tmp_path)
    assert record["status"] == "failed"
    assert "no pipeline.json" in record["error"] and "no_such_script.py" in record["error"]
    assert Path(record["log"]).is_file()


def test_a_failed_case_inside_a_part_marks_it_partly_failed(tmp_path, monkeypatch):
    case = {"kind": "3d", "size": 64, "slices": 8, "tile": [16, 60, 60], "filters": 8}
    report = {"cases": [{**case, "error": "ConfigError: tile too small"}]}
    script = tmp_path / "fake_inference.py"  # writes its report to --out, the last argument
    script.write_text(f"import json, sys\nwith open(sys.argv[-1], 'w') as f:\n    json.dump({report!r}, f)\n")
    monkeypatch.setitem(run_all.PARTS, "inference", run_all.Part("3. Inference", str(script)))
    args = types.SimpleNamespace(size="tiny", real_ct=[], training_run=None, extra_options={})
    record = run_all.run_part("inference", args, tmp_path)
    assert record["status"] == "partly failed"
    assert record["problems"] == ["3d 8 slices: ConfigError: tile too small"]
    suite = {"size": "tiny", "command": "run_all", "started": "now", "minutes": 0.1, "machine": MACHINE}
    table = run_all.markdown({**suite, "parts": {"inference": record}})
    assert "Failed inside this part: 3d 8 slices: ConfigError: tile too small." in table


def test_options_reach_the_part_after_the_sizes_own(tmp_path, monkeypatch):
    script = tmp_path / "fake_inference.py"  # records its arguments as the report, at --out (the last argument)
    script.write_text(
        "import json, sys\nwith open(sys.argv[-1], 'w') as f:\n    json.dump({'cases': [], 'argv': sys.argv}, f)\n"
    )
    monkeypatch.setitem(run_all.PARTS, "inference", run_all.Part("3. Inference", str(script)))
    parser = argparse.ArgumentParser()
    extra = run_all._extra_options(parser, ["inference=--baselines --budget-minutes 3", "training=--min-seconds 1"])
    args = types.SimpleNamespace(size="tiny", real_ct=[], training_run=None, extra_options=extra)
    record = run_all.run_part("inference", args, tmp_path)
    argv = record["report"]["argv"]
    tiny = run_all.PART_OPTIONS["inference"]["tiny"].split()
    assert argv[1 : 1 + len(tiny)] == tiny
    assert argv[1 + len(tiny) : -2] == ["--baselines", "--budget-minutes", "3"]
    assert "--min-seconds" not in argv


@pytest.mark.parametrize("item", ["nosuchpart=--quick", "inference --baselines"])
def test_a_bad_options_item_stops_with_a_usage_error(item, capsys):
    with pytest.raises(SystemExit) as stopped:
        run_all.main(["--size", "tiny", "--options", item])
    assert stopped.value.code == 2
    assert repr(item) in capsys.readouterr().err


def test_a_part_past_its_timeout_is_killed_with_its_subprocesses(tmp_path):
    spawn = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    log = tmp_path / "part.log"
    started = time.monotonic()
    _, error = run_all._run([sys.executable, "-c", spawn], log, timeout=3)
    assert error.startswith("timeout") and time.monotonic() - started < 60
    grandchild = int(log.read_text().split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid):
    """Running, not merely a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


def test_time_to_quality_without_a_run_is_not_measured(tmp_path):
    args = types.SimpleNamespace(size="small", real_ct=[], training_run=None, extra_options={})
    record = run_all.run_part("time_to_quality", args, tmp_path)
    assert record["status"] == "not measured"
    assert record["goals"]["minutes_to_pass_bm3d"]["status"] == "not measured"
    assert not list(tmp_path.iterdir())  # nothing ran


def test_peak_memory_of_a_subprocess_is_its_own_not_its_parents():
    """A case run in a subprocess must not report the memory its parent used before starting it."""
    import subprocess

    import numpy as np

    ballast = np.ones(400 * 2**20, dtype=np.uint8)  # 400 MB touched in this process
    probe = "from benchmarks.common import peak_rss_bytes; print(peak_rss_bytes())"
    child = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    del ballast
    assert int(child.stdout) < 200 * 2**20  # on Linux ru_maxrss would say >= 400 MB here


def test_recorded_command_reproduces_arguments_with_spaces():
    """A results file's command, pasted into a shell, gives the study the same arguments."""
    import shlex

    from benchmarks.common import command_line

    argv = ["--sets", "crlm_abdomen volume", "crlm_abdomen volume 3 mm", "--levels", "0.05,0.1", "--out", Path("a b.json")]
    command = command_line("studies/real_ct.py", argv)
    assert shlex.split(command) == ["python3", "studies/real_ct.py", *map(str, argv)]
