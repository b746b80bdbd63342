"""Multi-worker training (``--distribute multiworker``): two worker processes on this machine.

Each worker is ``Train_model_denoising2D.py --quick --distribute multiworker`` with its own
``--out`` and a ``TF_CONFIG`` naming both workers on 127.0.0.1 (loopback only). Both must
finish, write two epochs of history and end with the same weights: that is what proves the
gradients were all-reduced between the processes and not computed by each alone.

A hung collective (a worker that died, a port that never answered) must not hang the test
suite: both workers are killed after ``TIMEOUT_S`` and the test fails with their output.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.scripts import REPO, history_epochs, run_script

pytestmark = pytest.mark.e2e  # two training processes: minutes

SCRIPT_2D = REPO / "Train_model_denoising2D.py"
TIMEOUT_S = 300
N_WORKERS = 2


# What a worker prints when another process took its port between free_loopback_ports and its gRPC bind.
PORT_TAKEN = ("Address already in use", "Failed to add port", "Could not start gRPC server")
PORT_ATTEMPTS = 3


def free_loopback_ports(n):
    """Ports the OS reports free on 127.0.0.1 (bound to port 0, then released for the workers).

    Another process may take one before a worker binds it: ``run_workers`` then retries on new ports.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_env(ports, index):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    # gRPC honours proxy variables; the workers talk to each other on loopback only.
    for name in ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(name, None)
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def run_workers(tmp_path, *args):
    """Start every worker, wait for all (killing all after TIMEOUT_S); return [(returncode, log text)].

    A start that failed because a chosen port was taken meanwhile is retried on fresh ports.
    """
    for attempt in range(PORT_ATTEMPTS):
        for index in range(N_WORKERS):
            shutil.rmtree(tmp_path / f"worker{index}", ignore_errors=True)
        results = _run_workers_once(tmp_path, free_loopback_ports(N_WORKERS), *args)
        port_taken = any(code != 0 and any(s in text for s in PORT_TAKEN) for code, text in results)
        if not port_taken or attempt == PORT_ATTEMPTS - 1:
            return results
        print(f"a worker's port was taken (attempt {attempt + 1} of {PORT_ATTEMPTS}); retrying on new ports")


def _run_workers_once(tmp_path, ports, *args):
    processes, timed_out = [], []
    with contextlib.ExitStack() as stack:
        for index in range(N_WORKERS):
            # Output to a file, not a pipe: a full pipe nobody reads could block a worker mid-collective.
            log = stack.enter_context(open(tmp_path / f"worker{index}.log", "w"))
            out = tmp_path / f"worker{index}"
            command = [
                sys.executable,
                str(SCRIPT_2D),
                "--quick",
                "--distribute",
                "multiworker",
                "--out",
                str(out),
                *args,
            ]
            env = worker_env(ports, index)
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + TIMEOUT_S
        try:
            for process in processes:
                process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        finally:  # also on KeyboardInterrupt: never leave a worker behind
            timed_out = [p for p in processes if p.poll() is None]
            for process in timed_out:
                process.kill()
            for process in processes:
                process.wait()
    results = [
        (p.returncode, (tmp_path / f"worker{i}.log").read_text(errors="replace")) for i, p in enumerate(processes)
    ]
    if timed_out:
        raise AssertionError(
            f"multi-worker training did not finish in {TIMEOUT_S} s; workers killed:\n" + _tails(results)
        )
    return results


def _tails(results):
    return "\n".join(f"--- worker {i} (exit code {code}):\n{text[-3000:]}" for i, (code, text) in enumerate(results))


def test_two_workers_train_one_model_on_localhost(tmp_path):
    results = run_workers(tmp_path)
    assert all(code == 0 for code, _ in results), _tails(results)
    for index, (_, text) in enumerate(results):
        out = tmp_path / f"worker{index}"
        assert history_epochs(out) == [0, 1]
        assert (out / "model_final.keras").is_file() and (out / "finished.json").is_file()
        assert json.loads((out / "finished.json").read_text())["replicas"] == N_WORKERS  # one replica per worker
        assert "Best validation PSNR" in text
    # Losses and metrics are reduced across the workers, so both histories are the same table.
    histories = [(tmp_path / f"worker{i}" / "history.csv").read_text() for i in range(N_WORKERS)]
    assert histories[0] == histories[1]
    # Both workers hold the same weights after training: the gradients were all-reduced.
    from models.storage import load_model

    weights = [load_model(tmp_path / f"worker{i}" / "model_final.keras")[0].get_weights() for i in range(N_WORKERS)]
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.bad_input
def test_multiworker_without_tf_config_fails_with_one_line(tmp_path):
    env_backup = os.environ.pop("TF_CONFIG", None)
    try:
        result = run_script(
            SCRIPT_2D, "--quick", "--distribute", "multiworker", "--out", tmp_path / "run", check=False, timeout=300
        )
    finally:
        if env_backup is not None:
            os.environ["TF_CONFIG"] = env_backup
    assert result.returncode != 0
    assert "TF_CONFIG" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
