"""Smoke runs of the GPU benchmarks on the CPU, with tiny budgets: each script runs end to
end, prints its table, keeps to ``--budget-s`` and reports what did not run.

The peers (Stable-Baselines3) come with the ``bench`` extra; without it those rows say why
and the tests still check the tdrl rows. The whole ``benchmarks/gpu_check.sh`` smoke run
(``DEVICE=cpu``) is marked slow.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MUJOCO_GL", None)
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rates(stdout: str) -> dict[str, str]:
    """``impl -> first numeric cell`` of the markdown table rows."""
    rows = re.findall(r"^\| (\S+) \| ([^|]+) \|", stdout, flags=re.M)
    return {name: cell.strip() for name, cell in rows if name not in ("impl", "---")}


def _has_sb3() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def test_qpg_updates_runs_on_the_cpu_with_every_row_printed():
    impls = ["tdrl-sac", "tdrl-sac-devreplay", "tdrl-td3", "sb3-sac", "torchrl-sac"]
    proc = _run(
        "benchmarks/qpg_updates.py",
        *("--device", "cpu", "--updates", "6", "--repeats", "1", "--warmup", "2"),
        *("--chunk", "3", "--budget-s", "60", "--impls", *impls),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rates = _rates(proc.stdout)
    for name in impls:
        if name.startswith("sb3") and not _has_sb3():
            continue
        assert float(rates[name].replace(",", "")) > 0, (name, rates)
        assert re.search(rf"^  run 1/1 {name}: [\d,.]+ updates/s", proc.stdout, re.M), name
    assert re.search(r"^Target tdrl SAC \(eager\) vs SB3 SAC updates/s >= 2x", proc.stdout, re.M)


def test_qpg_updates_keeps_to_its_budget():
    """A budget too small to build anything: every row says so, the script ends at once
    (this is not a failure of tdrl: exit 0)."""
    t0 = time.monotonic()
    proc = _run("benchmarks/qpg_updates.py", "--budget-s", "1", "--impls", "tdrl-sac", "sb3-sac")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert time.monotonic() - t0 < 60
    rates = _rates(proc.stdout)
    assert rates == {"tdrl-sac": "n/a", "sb3-sac": "n/a"}, rates
    assert proc.stdout.count("skipped: budget spent") >= 2
    assert "not measured -> FAIL" in proc.stdout


def test_dqn_updates_runs_on_the_cpu_with_frame_replay():
    impls = ["tdrl-dqn", "tdrl-dqn-devreplay", "sb3-dqn", "torchrl-dqn"]
    proc = _run(
        "benchmarks/dqn_updates.py",
        *("--device", "cpu", "--replay-size", "2000", "--updates", "3", "--repeats", "1"),
        *("--warmup", "1", "--chunk", "3", "--budget-s", "60", "--impls", *impls),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rates = _rates(proc.stdout)
    for name in impls:
        if name.startswith("sb3") and not _has_sb3():
            continue
        assert float(rates[name].replace(",", "")) > 0, (name, rates)
    assert "2000 transitions of random frame stacks" in proc.stdout


def test_dqn_updates_reports_a_missing_bf16_option_without_failing():
    """``tdrl-dqn-bf16`` needs a bf16 option of DQN; when tdrl has none the row says so and
    the exit status stays 0; when it has one the row is measured."""
    proc = _run(
        "benchmarks/dqn_updates.py",
        *("--replay-size", "2000", "--updates", "2", "--repeats", "1", "--warmup", "1"),
        *("--chunk", "2", "--impls", "tdrl-dqn-bf16"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cell = _rates(proc.stdout)["tdrl-dqn-bf16"]
    assert cell != "n/a" or "no bf16 autocast" in proc.stdout


def test_sampler_scaling_expands_workers_and_keeps_to_its_budget():
    proc = _run(
        "benchmarks/sampler_scaling.py",
        *("--envs", "CartPole-v1", "--loops", "serial", "gpu", "cpu-16", "--workers", "8", "16"),
        *("--seconds", "0.2", "--repeats", "1", "--batch-B", "4", "--budget-s", "8"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "loops serial gpu-8 gpu-16 cpu-16" in proc.stdout
    # The serial loop is built first and has 6.8 s to be ready for its 0.2 s run: margin for
    # a busy machine (with 6 s and two worker loops started before it, it once had none).
    assert re.search(r"^  run 1/1 CartPole-v1 serial: [\d,]+ steps/s", proc.stdout, re.M)
    # 8 or 16 workers cannot start (guessed 7.6 s and more) and run within 8 s: skipped,
    # not started and killed.
    for loop in ("gpu-8", "gpu-16", "cpu-16"):
        assert f"CartPole-v1 {loop}: skipped: budget spent" in proc.stdout
    proc = _run("benchmarks/sampler_scaling.py", "--loops", "bogus")
    assert proc.returncode != 0 and "unknown loop 'bogus'" in proc.stderr


@pytest.mark.slow
@pytest.mark.timeout(600)  # 13 s measured under load
def test_sampler_scaling_with_workers_on_the_cpu():
    proc = _run(
        "benchmarks/sampler_scaling.py",
        *("--envs", "CartPole-v1", "--loops", "gpu", "cpu", "--workers", "1"),
        *("--seconds", "0.3", "--repeats", "1", "--batch-B", "4", "--device", "cpu"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for loop in ("gpu-1", "cpu-1"):
        assert re.search(rf"^  run 1/1 CartPole-v1 {loop}: [\d,]+ steps/s", proc.stdout, re.M)


def test_gpu_check_refuses_unknown_arguments():
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--bogus"], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown argument --bogus" in proc.stderr
    proc = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--help"], capture_output=True,
                          text=True)  # fmt: skip
    assert proc.returncode == 0 and "python3 -m pip install" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)  # 45 s measured under load
def test_gpu_check_smoke_run_on_the_cpu(tmp_path):
    env = {**os.environ, "DEVICE": "cpu", "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    log = (tmp_path / "gpu_check.log").read_text()
    assert "=== summary (cpu)" in log and "gpu_check: 0 of 5 steps failed" in log, log[-4000:]
    assert proc.returncode == 0


@pytest.mark.timeout(300)
def test_nonfinite_guard_benchmark_prints_its_table():
    proc = _run("benchmarks/nonfinite_guard.py", "--rounds", "1", "--seconds", "0.01")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("dqn update", "sac update", "ppo optimize", "serial batch"):
        assert re.search(rf"^{row} +[\d.]+ +[\d.]+ +-?[\d.]+%$", proc.stdout, flags=re.M), (
            proc.stdout
        )


def test_vector_sampler_prints_a_row_per_activation():
    proc = _run(
        "benchmarks/vector_sampler.py",
        "--num-envs", "64", "--threads", "1", "--batch-T", "4",
        "--seconds", "0.05", "--repeats", "1",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    for activation in ("tanh", "relu"):
        row = rf"^\| 64 \| 1 \| {activation} \| [\d,]+ \| [\d,]+ \| [\d.]+ \|$"
        assert re.search(row, proc.stdout, flags=re.M), proc.stdout
        assert re.search(rf"^(PASS|FAIL): N=64, 1 thread\(s\), {activation}:", proc.stdout, re.M)


def test_zoo_trains_presets_and_prints_its_table(tmp_path):
    pytest.importorskip("matplotlib")
    proc = _run(
        "benchmarks/zoo.py",
        *("--presets", "ppo-cartpole", "--seeds", "0", "1", "--n-steps", "512"),
        *("--log-dir", str(tmp_path), "--plot", str(tmp_path / "zoo.png")),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = re.search(
        r"^\| ppo-cartpole \| CartPole-v1 \| ([^|]+) \| ([^|]+) \| (\d+) \|", proc.stdout, re.M
    )
    assert row, proc.stdout
    seeds = [float(v) for v in row.group(1).split(",")]
    assert len(seeds) == 2 and int(row.group(3)) >= 512
    assert "500.0 ± 0.0 at 100k" in proc.stdout  # rl-zoo3's reference beside it
    assert (tmp_path / "zoo.png").stat().st_size > 0
