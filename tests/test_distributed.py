"""Meta-training on several processes (``torchrun``) takes the steps one process takes.

The reference is the same command on one process: every process draws the same tasks, samples
its shard's episodes with its rows of the whole batch's noise, and the gradients and
Fisher-vector products are summed, so parameters agree up to the order of float32 additions.
MAML-TRPO's conjugate gradient amplifies round-off on ill-conditioned systems (one process with
two threads drifts as far from one thread), so the RL comparisons use a well-conditioned
``cg_damping`` and few iterations.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.config import ConfigError
from metarl.distributed import Shard, World
from metarl.rl.sampler import sample_gaussian
from metarl.rl.task_envs import make_batched_env
from metarl.run import load_checkpoint

TIMEOUT = 240  # seconds per command: a hung rendezvous fails the test instead of the run


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(experiment: str, out: Path, settings: list[str], processes: int, *extra: str) -> str:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc-per-node={processes}", "-m", "metarl"]
        if processes > 1 else [sys.executable, "-m", "metarl"]
    )  # fmt: skip
    command = [*launcher, "train", experiment, *extra, "--no-progress"]
    if "--resume" not in extra:
        command += ["--out", str(out)]
    command += ["--set", *settings]
    done = _run(command)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _run(command: list[str]) -> subprocess.CompletedProcess:
    """``command`` to its end, or stopped with all its processes after ``TIMEOUT``."""
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        out, err = launcher.communicate(timeout=TIMEOUT)
    finally:
        _stop(launcher)
    return subprocess.CompletedProcess(command, launcher.returncode, out, err)


def _stop(launcher: subprocess.Popen) -> None:
    """End torchrun and its workers. The workers run in sessions of their own, so killing the
    launcher alone would leave them training, and competing for the CPU, after the test."""
    if launcher.poll() is not None:
        return
    workers = list(_rank_pids(launcher.pid).values()) if Path("/proc").is_dir() else []
    launcher.terminate()  # torchrun stops its workers on SIGTERM
    try:
        launcher.wait(timeout=30)
    except subprocess.TimeoutExpired:
        launcher.kill()
        launcher.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _parameters(run: Path) -> dict[str, torch.Tensor]:
    """The model's and the algorithm's meta-parameters (learned step sizes) of a run."""
    state = load_checkpoint(run)
    return {
        **state["model"],
        **{f"algorithm.{k}": v for k, v in state.get("algorithm", {}).items()},
    }


def _max_difference(a: Path, b: Path) -> float:
    one, two = _parameters(a), _parameters(b)
    assert one.keys() == two.keys()
    return max(float((one[k] - two[k]).abs().max()) for k in one)


# --- the pieces, in one process ---------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_shards_cover_the_meta_batch_once_and_evenly(size: int) -> None:
    spans = [World(rank, size).shard(7) for rank in range(size)]
    assert spans[0][0] == 0 and spans[-1][1] == 7
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no overlap
    lengths = [stop - start for start, stop in spans]
    assert max(lengths) - min(lengths) <= 1


def test_more_processes_than_tasks_is_refused() -> None:
    with pytest.raises(ConfigError, match="smaller than the 4 processes"):
        World(0, 4).shard(3)


def test_sharded_action_noise_is_the_whole_batchs_rows() -> None:
    mean, log_std = torch.zeros(5, 3, 2), torch.zeros(2)
    whole = sample_gaussian(mean, log_std, torch.Generator().manual_seed(1))
    parts = [
        sample_gaussian(mean[a:b], log_std, torch.Generator().manual_seed(1), Shard(a, b, 5))
        for a, b in [(0, 3), (3, 5)]
    ]
    assert torch.equal(torch.cat(parts), whole)


def test_sharded_reset_noise_is_the_whole_batchs_rows() -> None:
    pytest.importorskip("mujoco")
    tasks = [{"velocity": v} for v in np.linspace(0.0, 2.0, 6)]
    whole = make_batched_env("HalfCheetahVel", 6, 5)
    whole.set_tasks(tasks)
    whole.seed([0, 3])
    expected = whole.reset()
    rows = []
    for first, stop in [(0, 4), (4, 6)]:
        part = make_batched_env("HalfCheetahVel", stop - first, 5)
        part.noise_rows = (first, 6)
        part.set_tasks(tasks[first:stop])
        part.seed([0, 3])
        rows.append(part.reset())
    np.testing.assert_array_equal(np.concatenate(rows), expected)


# --- whole runs: two processes against one ----------------------------------------------------
def test_sinusoid_on_two_processes_takes_the_steps_of_one_and_resumes_on_one(
    tmp_path: Path,
) -> None:
    """Five tasks on two processes (3 + 2), with learned per-tensor step sizes; two iterations on
    two processes, the third on one: a checkpoint holds nothing of the number of processes."""
    settings = ["meta_batch_size=5", "learn_inner_lr=tensor", "tensorboard=false"]
    _train("sinusoid", tmp_path / "one", [*settings, "iterations=3"], 1)
    _train("sinusoid", tmp_path / "two", [*settings, "iterations=2"], 2)
    _train("sinusoid", tmp_path / "two", ["iterations=3"], 1, "--resume", str(tmp_path / "two"))
    assert load_checkpoint(tmp_path / "two")["iteration"] == 3
    assert _max_difference(tmp_path / "one", tmp_path / "two") < 1e-5
    step_sizes = load_checkpoint(tmp_path / "one")["algorithm"]
    assert step_sizes and all(  # learned: they moved from the configured α = 0.01
        not torch.allclose(alpha, torch.full_like(alpha, 0.01)) for alpha in step_sizes.values()
    )


def test_navigation_on_two_processes_takes_the_steps_of_one(tmp_path: Path) -> None:
    """MAML-TRPO, five tasks on two processes (3 + 2): the first iteration's step is one
    process's up to rounding, and two more (resumed) stay within 2% of how far they move θ.

    Later steps cannot agree to rounding: the sums' rounding differs between one and two
    processes, and the TRPO step (conjugate gradients on the Fisher matrix) amplifies it from
    one iteration to the next. With the default ReLU policy a unit that switches on a sample
    also changes that sample's gradient by a finite amount: on one CPU θ after three iterations
    agreed to 1e-4, on another it differed by 2e-2 (1e-6 after the first). tanh is smooth:
    3e-4 there, 0.6% of the parameters' change."""
    settings = [
        "meta_batch_size=5", "episodes_per_task=4", "horizon=20", "cg_damping=0.1",
        "activation=tanh", "tensorboard=false",
    ]  # fmt: skip
    runs = {processes: tmp_path / f"{processes}" for processes in (1, 2)}
    for processes, run in runs.items():
        _train("navigation", run, [*settings, "iterations=1"], processes)
    first = _parameters(runs[1])
    assert _max_difference(runs[1], runs[2]) < 1e-4
    for processes, run in runs.items():
        _train("navigation", run, ["iterations=3"], processes, "--resume", str(run))
    moved = max(float((first[k] - v).abs().max()) for k, v in _parameters(runs[1]).items())
    assert _max_difference(runs[1], runs[2]) < 0.02 * moved
    env_steps = [load_checkpoint(run)["env_steps"] for run in runs.values()]
    assert env_steps[0] == env_steps[1]


@pytest.mark.parametrize("fisher_product", ["gauss_newton", "finite_difference"])
def test_locomotion_on_two_processes_takes_the_step_of_one(
    tmp_path: Path, fisher_product: str
) -> None:
    """MuJoCo's reset noise and the sharded Fisher products (three tasks: 2 + 1)."""
    pytest.importorskip("mujoco")
    settings = [
        "iterations=1", "meta_batch_size=3", "episodes_per_task=2", "horizon=10",
        "cg_damping=0.1", f"fisher_product={fisher_product}", "tensorboard=false",
    ]  # fmt: skip
    _train("halfcheetah-vel", tmp_path / "one", settings, 1)
    _train("halfcheetah-vel", tmp_path / "two", settings, 2)
    assert _max_difference(tmp_path / "one", tmp_path / "two") < 1e-4


def test_two_processes_need_two_tasks(tmp_path: Path) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "metarl", "train", "sinusoid", "--out", str(tmp_path / "run"), "--no-progress",
        "--set", "meta_batch_size=1", "iterations=1",
    ]  # fmt: skip
    done = _run(command)
    assert done.returncode != 0
    assert "meta_batch_size 1 is smaller than the 2 processes" in done.stderr
    # torchrun prints its own ChildFailedError; no frame of metarl's code shows
    assert "metarl/" not in "".join(
        line for line in done.stderr.splitlines() if line.lstrip().startswith("File ")
    )
    assert not (tmp_path / "run").exists()


def test_what_cannot_run_under_torchrun_is_refused_and_the_group_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under torchrun (a process group of 2, faked here) a time limit (each process's clock
    would stop it at another iteration), more processes than tasks and ordinary training are
    refused; the process group is left after each refusal, and no run directory is made."""
    from metarl.api import train

    left: list[bool] = []
    monkeypatch.setattr("metarl.api.init_world", lambda device: World(0, 2))
    monkeypatch.setattr("metarl.api.close_world", lambda finished=False: left.append(finished))
    with pytest.raises(ConfigError, match="a run under torchrun stops by iterations or Ctrl-C"):
        train("sinusoid", {"iterations": 2}, out=tmp_path / "run", time_limit=1.0)
    with pytest.raises(ConfigError, match="meta_batch_size 1 is smaller than the 2 processes"):
        train("sinusoid", {"meta_batch_size": 1}, out=tmp_path / "run")
    monkeypatch.setattr("metarl.api.preflight", lambda config: None)  # MNIST need not be here
    with pytest.raises(ConfigError, match=r"standard-mnist \(ordinary training\) runs on one"):
        train("standard-mnist", out=tmp_path / "run")
    assert left == [False, False, False] and not (tmp_path / "run").exists()


def test_a_lost_peer_is_one_line_naming_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    from metarl import distributed

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Connection reset by peer\nmore detail")

    monkeypatch.setattr(distributed.dist, "all_reduce", broken)
    with pytest.raises(distributed.PeerLost, match="process 0 of 2: another process") as caught:
        World(0, 2).sum_(torch.zeros(3))
    assert "--resume" in str(caught.value) and "\n" not in str(caught.value)


def _rank_pids(launcher_pid: int) -> dict[int, int]:
    """RANK → pid of the workers torchrun started (read from /proc)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = next(
            int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid")
        )
        rank = [v for v in environ if v.startswith(b"RANK=")]
        if parent == launcher_pid and rank:
            ranks[int(rank[0][5:])] = int(entry.name)
    return ranks


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_a_dead_process_stops_the_run_and_the_checkpoint_survives(tmp_path: Path) -> None:
    import time

    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "metarl", "train", "navigation", "--out", str(run), "--no-progress", "--set",
        "iterations=1000", "meta_batch_size=4", "episodes_per_task=2", "horizon=10",
        "checkpoint_every=1", "tensorboard=false",
    ]  # fmt: skip
    launcher = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env()
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert (run / "checkpoint.pt").exists(), "the run wrote no checkpoint"
        os.kill(_rank_pids(launcher.pid)[1], signal.SIGKILL)
        output, _ = launcher.communicate(timeout=TIMEOUT)
    finally:
        _stop(launcher)
    assert launcher.returncode != 0
    assert "rank      : 1" in output  # torchrun's summary names the process that died
    assert 1 <= load_checkpoint(run)["iteration"] < 1000


_CLOSING = """
import sys, time
from pathlib import Path
from metarl.distributed import close_world, init_world
folder, finished = Path(sys.argv[1]), sys.argv[2] == "finished"
world = init_world()
world.sum_float(1.0)
if world.is_main:
    if finished:
        time.sleep(2.0)  # rank 0 still saving its checkpoint: rank 1 must wait for it
    else:  # after an error rank 1 must leave without waiting: rank 0 arrives only after that
        deadline = time.monotonic() + 60.0
        while not (folder / "left").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    (folder / "arrived").write_text("")
close_world(finished=finished)
if not world.is_main:
    (folder / "left").write_text(str((folder / "arrived").exists()))
"""


@pytest.mark.parametrize("finished", [True, False])
def test_a_finished_process_leaves_only_with_its_peers(tmp_path: Path, finished: bool) -> None:
    """Whether rank 0 had arrived at the close when rank 1 left it, read from files. After an
    error rank 0 arrives only once rank 1 has left (an exact order); after finishing, rank 0
    arrives 2 s late, so a rank 1 that did not wait would leave first."""
    script = tmp_path / "closing.py"
    script.write_text(_CLOSING)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        str(script), str(tmp_path), "finished" if finished else "error",
    ]  # fmt: skip
    done = _run(command)
    assert done.returncode == 0, done.stdout + done.stderr
    # after finishing, rank 1 waits for rank 0; after an error nobody waits for a peer
    assert (tmp_path / "left").read_text() == str(finished)
