"""Affinity codes, variant grids and the experiment launcher (tdrl.launch, tdrl launch)."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import pytest

from tdrl.launch import (
    OUTPUT_FILE,
    SUMMARY_FILE,
    VARIANT_FILE,
    Affinity,
    AsyncAffinity,
    OptimizerAffinity,
    VariantLevel,
    affinity_from_code,
    apply_affinity,
    decode_affinity,
    encode_affinity,
    get_n_run_slots,
    get_run_args,
    load_variant,
    make_affinity,
    make_variants,
    option,
    parse_config,
    pin_process,
    prepend_run_slot,
    remove_run_slot,
    run_experiments,
    save_variant,
    train_and_log,
    update_config,
)

ROOT = Path(__file__).resolve().parents[1]
CAN_PIN = hasattr(os, "sched_getaffinity") and {0, 1} <= os.sched_getaffinity(0)


def _is_running(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self").exists():
        try:
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ------------------------------------------------------------------------------- affinity

AFFINITY_CASES = [
    {"n_cpu_core": 2},
    {"n_cpu_core": 4, "cpu_per_run": 2},
    {"n_cpu_core": 8, "cpu_per_run": 4, "cpu_reserved": 1, "cpu_per_worker": 3},
    {"n_cpu_core": 4, "cpu_per_run": 4, "hyperthread_offset": 4, "alternating": True},
    {"n_cpu_core": 4, "cpu_per_run": 2, "async_sample": True, "cpu_reserved": 1},
    {"n_cpu_core": 8, "n_gpu": 2, "contexts_per_gpu": 2},
    {"n_cpu_core": 8, "n_gpu": 4, "gpu_per_run": 2},
    {"n_cpu_core": 8, "n_gpu": 4, "async_sample": True, "sample_gpu_per_run": 1},
    {"n_cpu_core": 2, "set_affinity": False},
]


@pytest.mark.parametrize("kwargs", AFFINITY_CASES, ids=lambda k: encode_affinity(**k))
def test_affinity_code_round_trip(kwargs):
    code = encode_affinity(**kwargs)
    decoded = decode_affinity(code)
    assert decoded.pop("run_slot") is None
    assert {k: decoded[k] for k in kwargs} == kwargs
    assert encode_affinity(**decoded) == code
    n_slots = get_n_run_slots(code)
    for slot in range(n_slots):
        slot_code = prepend_run_slot(code, slot)
        assert slot_code == encode_affinity(**kwargs, run_slot=slot)
        assert slot_code.startswith(f"{slot}slt_")
        assert remove_run_slot(slot_code) == (slot, code)
        assert affinity_from_code(slot_code) == make_affinity(**kwargs, run_slot=slot)
    assert affinity_from_code(code) == make_affinity(**kwargs)  # no prefix: slot 0


def test_affinity_code_format():
    assert encode_affinity(n_cpu_core=4, cpu_per_run=2) == "4cpu_0gpu_2cpr"
    code = encode_affinity(
        n_cpu_core=24, n_gpu=4, async_sample=True, sample_gpu_per_run=1, alternating=True
    )
    assert code == "24cpu_4gpu_1ass_1sgr_1alt"
    assert prepend_run_slot(code, 1) == "1slt_" + code
    assert get_n_run_slots("1slt_" + code) == 2


def test_cpu_run_slots_split_the_cores():
    slots = [make_affinity(n_cpu_core=4, cpu_per_run=2, run_slot=s) for s in range(2)]
    assert slots[0] == Affinity(
        master_cpus=(0, 1), workers_cpus=((0,), (1,)), torch_threads=2, run_slot=0
    )
    assert slots[1].master_cpus == (2, 3) and slots[1].workers_cpus == ((2,), (3,))
    assert slots[1].cuda_idx is None and not slots[1].alternating
    assert slots[1].all_cpus == (2, 3) and slots[1].n_workers == 2
    one = make_affinity(n_cpu_core=6, cpu_per_run=6, cpu_reserved=2, cpu_per_worker=2)
    assert one.master_cpus == (0, 1, 2, 3, 4, 5) and one.workers_cpus == ((2, 3), (4, 5))
    assert one.torch_threads == 6 and one.worker_torch_threads == 2


def test_hyperthreads_and_alternating():
    aff = make_affinity(n_cpu_core=2, cpu_per_run=2, hyperthread_offset=2)
    assert aff.master_cpus == (0, 1, 2, 3) and aff.workers_cpus == ((0, 2), (1, 3))
    assert aff.torch_threads == 2
    alt = make_affinity(n_cpu_core=2, cpu_per_run=2, hyperthread_offset=2, alternating=True)
    assert alt.workers_cpus == ((0,), (1,), (2,), (3,)) and alt.alternating
    doubled = make_affinity(n_cpu_core=2, cpu_per_run=2, alternating=True)
    assert doubled.workers_cpus == ((0,), (1,), (0,), (1,))


def test_async_affinity_has_optimizer_and_sampler_parts():
    aff = make_affinity(
        n_cpu_core=4, cpu_per_run=4, async_sample=True, cpu_reserved=1, cpu_per_worker=3
    )
    assert isinstance(aff, AsyncAffinity)
    assert aff.optimizer == (OptimizerAffinity(cpus=(0,), torch_threads=1),)
    assert aff.sampler.master_cpus == (1, 2, 3) and aff.sampler.workers_cpus == ((1, 2, 3),)
    assert aff.all_cpus == (0, 1, 2, 3)
    shared = make_affinity(n_cpu_core=2, cpu_per_run=2, async_sample=True)
    assert shared.optimizer[0].cpus == (0, 1) == shared.sampler.master_cpus
    gpu = make_affinity(
        n_cpu_core=8, n_gpu=4, async_sample=True, sample_gpu_per_run=1, cpu_reserved=1, run_slot=1
    )
    assert gpu.optimizer[0].cuda_idx == 2 and gpu.optimizer[0].cpus == (4,)
    assert gpu.sampler.cuda_idx == 3 and gpu.sampler.master_cpus == (5, 6, 7)


def test_gpu_affinities():
    ctx = [make_affinity(n_cpu_core=8, n_gpu=2, contexts_per_gpu=2, run_slot=s) for s in range(4)]
    assert [a.cuda_idx for a in ctx] == [0, 0, 1, 1]
    assert [a.master_cpus for a in ctx] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    multi = make_affinity(n_cpu_core=8, n_gpu=4, gpu_per_run=2, run_slot=1)
    assert isinstance(multi, tuple) and [a.cuda_idx for a in multi] == [2, 3]
    assert [a.master_cpus for a in multi] == [(4, 5), (6, 7)]


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"n_cpu_core": 3, "cpu_per_run": 2}, ["cpu_per_run", "n_cpu_core"]),
        ({"n_cpu_core": 0}, ["n_cpu_core"]),
        ({"n_cpu_core": 2, "run_slot": 2}, ["run_slot"]),
        ({"n_cpu_core": 4, "cpu_per_run": 4, "cpu_per_worker": 3}, ["cpu_per_worker"]),
        ({"n_cpu_core": 2, "cpu_per_run": 2, "cpu_reserved": 2}, ["cpu_reserved"]),
        ({"n_cpu_core": 2, "gpu_per_run": 2}, ["gpu_per_run", "n_gpu"]),
        ({"n_cpu_core": 2, "n_gpu": 1, "cpu_per_run": 2}, ["cpu_per_run"]),
        ({"n_cpu_core": 5, "n_gpu": 2}, ["n_cpu_core", "n_gpu"]),
        ({"n_cpu_core": 4, "n_gpu": 3, "gpu_per_run": 2}, ["n_gpu"]),
        ({"n_cpu_core": 2, "sample_gpu_per_run": 1}, ["sample_gpu_per_run", "async_sample"]),
        ({"n_cpu_core": 4, "hyperthread_offset": 2}, ["hyperthread_offset"]),
        ({"n_cpu_core": 2.5}, ["n_cpu_core"]),  # whole floats (2.0) are counts, 2.5 is not
    ],
)
def test_bad_affinity_arguments_name_the_argument(kwargs, names):
    with pytest.raises(ValueError) as info:
        make_affinity(**kwargs)
    for name in names:
        assert name in str(info.value)
    if "run_slot" not in kwargs:
        with pytest.raises(ValueError):
            encode_affinity(**kwargs)


@pytest.mark.parametrize(
    ("code", "match"),
    [
        ("4cpu_2xyz", "unknown abbreviation 'xyz'"),
        ("4cpu_cpr", "'cpr' is not"),
        ("4cpu_2cpu", "given twice"),
        ("3cpu_2cpr", "cpu_per_run"),
        ("5slt_2cpu", "run_slot"),
        ("", "non-empty"),
    ],
)
def test_bad_affinity_codes(code, match):
    with pytest.raises(ValueError, match=match):
        affinity_from_code(code)


def test_apply_affinity_pins_and_sets_torch_threads(monkeypatch):
    import torch

    threads = torch.get_num_threads()
    try:
        if hasattr(os, "sched_getaffinity"):
            allowed = tuple(sorted(os.sched_getaffinity(0)))
            aff = Affinity(master_cpus=allowed, workers_cpus=(allowed[:1],), torch_threads=1)
            assert apply_affinity(aff) == allowed
            assert apply_affinity(aff, worker=0) == allowed[:1]
            assert os.sched_getaffinity(0) == set(allowed[:1])
            os.sched_setaffinity(0, allowed)
            assert apply_affinity({"master_cpus": allowed, "master_torch_threads": 2}) == allowed
            assert torch.get_num_threads() == 2
        off = Affinity(master_cpus=(0,), workers_cpus=(), torch_threads=1, set_affinity=False)
        assert apply_affinity(off) is None and torch.get_num_threads() == 1
        with pytest.warns(RuntimeWarning, match="could not pin"):
            assert apply_affinity({"cpus": [100_000], "torch_threads": 1}) is None
        monkeypatch.delattr(os, "sched_setaffinity", raising=False)
        with pytest.warns(RuntimeWarning, match="not supported"):
            assert not pin_process([0])
        with pytest.raises(TypeError, match="optimizer"):
            apply_affinity(make_affinity(n_cpu_core=2, cpu_per_run=2, async_sample=True))
        with pytest.raises(IndexError):
            apply_affinity(off, worker=0)
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- variants


def test_make_variants_crosses_levels():
    lr = VariantLevel([("algo", "lr"), "algo.clip"], [[1e-3, 0.1], [3e-4, 0.2]], ["a", "b"])
    env = VariantLevel(["env"], [["x"], ["y"], ["z"]], ["x", "y", "z"])
    variants, log_dirs = make_variants(lr, env)
    assert log_dirs == ["a/x", "a/y", "a/z", "b/x", "b/y", "b/z"]
    assert variants[0] == {"algo": {"lr": 1e-3, "clip": 0.1}, "env": "x"}
    assert variants[5] == {"algo": {"lr": 3e-4, "clip": 0.2}, "env": "z"}
    assert make_variants() == ([{}], [""])
    with pytest.raises(ValueError, match="dir_names"):
        make_variants(VariantLevel(["k"], [[1], [2]], ["one"]))
    with pytest.raises(ValueError, match="not unique"):
        make_variants(VariantLevel(["k"], [[1], [2]], ["same", "same"]))
    with pytest.raises(ValueError, match="2 values for 1 keys"):
        make_variants(VariantLevel(["k"], [[1, 2]], ["a"]))


@dataclasses.dataclass
class _Inner:
    lr: float = 1e-3
    eps: float = 1e-5


@dataclasses.dataclass
class _Outer:
    algo: _Inner = dataclasses.field(default_factory=_Inner)
    seed: int = 0


def test_update_config_deep_merges_and_rejects_unknown_keys():
    default = {"algo": {"lr": 1e-3, "eps": 1e-5}, "seed": 0, "env": {"id": "CartPole-v1"}}
    new = update_config(default, {"algo": {"lr": 3e-4}, "seed": 2})
    assert new == {"algo": {"lr": 3e-4, "eps": 1e-5}, "seed": 2, "env": {"id": "CartPole-v1"}}
    assert default["algo"]["lr"] == 1e-3 and new["env"] is not default["env"]
    with pytest.raises(KeyError, match=r"algo\.learning_rate"):
        update_config(default, {"algo": {"learning_rate": 1.0}})
    with pytest.raises(KeyError, match="'nope'"):
        update_config(default, {"nope": 1})
    with pytest.raises(TypeError, match="'seed'"):
        update_config(default, {"seed": {"x": 1}})
    with pytest.raises(TypeError, match="'algo'"):
        update_config(default, {"algo": 1})
    cfg = update_config(_Outer(), {"algo": {"lr": 0.5}, "seed": 3})
    assert cfg == _Outer(algo=_Inner(lr=0.5), seed=3)
    with pytest.raises(KeyError, match=r"algo\.nope"):
        update_config(_Outer(), {"algo": {"nope": 1}})


def test_save_and_load_variant(tmp_path):
    variant = {"algo": {"lr": 3e-4}, "env": "x"}
    path = save_variant(variant, tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" / VARIANT_FILE
    assert load_variant(tmp_path / "a" / "b") == variant
    with pytest.raises(FileNotFoundError):
        load_variant(tmp_path)


def test_get_run_args():
    run = get_run_args(["1slt_2cpu_0gpu", "logs/x", "3", "--n-steps", "5"])
    assert run.affinity_code == "1slt_2cpu_0gpu" and run.log_dir == "logs/x"
    assert run.run_ID == 3 and run.args == ("--n-steps", "5")
    assert run.run_dir == Path("logs/x/run_3")
    assert run.affinity == make_affinity(n_cpu_core=2, run_slot=1)
    with pytest.raises(SystemExit, match="at least 3"):
        get_run_args(["2cpu", "logs"])
    with pytest.raises(SystemExit, match="RUN_ID"):
        get_run_args(["2cpu", "logs", "x"])
    with pytest.raises(SystemExit, match="SLOT_AFFINITY_CODE"):
        get_run_args(["2potatoes", "logs", "0"])


# ------------------------------------------------------------------------------- configs


@dataclasses.dataclass
class _ScriptConfig:
    algo: Literal["ppo", "a2c"] = "ppo"
    n_steps: int = 100
    hidden_sizes: tuple[int, ...] = (64, 64)
    delta_clip: float | None = 1.0
    prioritized_replay: bool = option(False, "replay by priority", aliases=("--prioritized",))
    normalize: bool = True
    log_dir: str = "logs"
    run_ID: int = 0


def test_parse_config_builds_flags_from_fields(tmp_path, capsys):
    log_dir = str(tmp_path)
    assert parse_config(_ScriptConfig, ["--log-dir", log_dir]) == _ScriptConfig(log_dir=log_dir)
    config = parse_config(
        _ScriptConfig,
        [
            *("--algo", "a2c", "--n-steps", "7", "--hidden-sizes", "8", "16", "32"),
            *("--delta-clip", "none", "--prioritized", "--no-normalize", "--run-ID", "3"),
        ],
    )
    assert config == _ScriptConfig("a2c", 7, (8, 16, 32), None, True, False, "logs", 3)
    (tmp_path / "run_0").mkdir()
    (tmp_path / "run_0" / "progress.csv").write_text("x\n")  # run 0 taken: next free is 1
    assert parse_config(_ScriptConfig, ["--log-dir", log_dir]).run_ID == 1
    with pytest.raises(SystemExit):
        parse_config(_ScriptConfig, ["--algo", "dqn"])
    assert "invalid choice: 'dqn'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(_ScriptConfig, ["--help"], description="My script.\n\nMore.")
    out = capsys.readouterr().out
    assert "My script." in out and "More." not in out and "replay by priority" in out
    assert "--no-normalize" in out and "default: (64, 64)" in out


def test_train_and_log_saves_config_and_logs_summary(tmp_path, capsys):
    config = _ScriptConfig(log_dir=str(tmp_path), run_ID=2)
    row = {"ReturnAverage": 12.5, "Diagnostics/CumSteps": 100.0, "Diagnostics/CumUpdates": 4.0}
    assert train_and_log(config, lambda: row, name="script", label="PPO X") == row
    params = json.loads((tmp_path / "run_2" / "params.json").read_text())
    assert params["name"] == "script" and params["n_steps"] == 100 and params["algo"] == "ppo"
    out = capsys.readouterr().out
    assert "PPO X: ReturnAverage 12.5 after 100 steps, 4 updates in" in out
    assert str(tmp_path / "run_2") in out


# ------------------------------------------------------------------------------- launcher

TINY_SCRIPT = """
import json, os, subprocess, sys, time
from tdrl.launch import get_run_args, load_variant

run = get_run_args()
variant = load_variant(run.log_dir)
start = time.time()
print("tiny run", run.log_dir, run.run_ID, flush=True)
time.sleep(0.4)
info = {
    "variant": variant, "args": list(run.args), "code": run.affinity_code,
    "start": start, "end": time.time(),
    "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
}
if variant == {"algo": {"lr": 0.01}, "batch": 16}:  # leaves a grandchild behind
    info["orphan"] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]).pid
(run.run_dir / "info.json").write_text(json.dumps(info))
if variant == {"algo": {"lr": 0.1}, "batch": 8}:
    print("deliberate failure", file=sys.stderr)
    sys.exit(3)
"""


@pytest.fixture
def tiny_script(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(TINY_SCRIPT)
    return path


def _grid():
    return make_variants(
        VariantLevel(["algo.lr"], [[0.1], [0.01]], ["lr_0.1", "lr_0.01"]),
        VariantLevel(["batch"], [[8], [16]], ["b8", "b16"]),
    )


def _infos(results):
    paths = [Path(r.log_dir) / f"run_{r.run_ID}" / "info.json" for r in results]
    return [json.loads(p.read_text()) for p in paths]


def test_launcher_runs_grid_over_slots_and_survives_a_failure(tiny_script, tmp_path, capsys):
    variants, log_dirs = _grid()
    code = encode_affinity(n_cpu_core=2, cpu_per_run=1)
    results = run_experiments(
        tiny_script, code, "exp", 1, variants, log_dirs,
        log_root=tmp_path, common_args=["--common"], runs_args=[["--v", str(i)] for i in range(4)],
        poll_interval=0.05,
    )  # fmt: skip
    exp = tmp_path / "exp"
    assert [r.log_dir for r in results] == [str(exp / d) for d in log_dirs]
    assert [r.returncode for r in results] == [3, 0, 0, 0]
    assert [r.ok for r in results] == [False, True, True, True]
    assert all(r.run_ID == 0 and r.seconds > 0.3 and r.run_slot in (0, 1) for r in results)
    infos = _infos(results)
    for i, (result, info, variant) in enumerate(zip(results, infos, variants, strict=True)):
        assert json.loads((exp / log_dirs[i] / VARIANT_FILE).read_text()) == variant
        assert info["variant"] == variant and info["args"] == ["--common", "--v", str(i)]
        assert info["code"] == f"{result.run_slot}slt_2cpu_0gpu"
        if CAN_PIN:
            assert info["cpus"] == [result.run_slot]
        assert "tiny run" in Path(result.output).read_text()
    assert "deliberate failure" in Path(results[0].output).read_text()
    # two slots: never more than two runs at once, and the two did overlap
    spans = [(info["start"], info["end"]) for info in infos]
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlap == 2
    orphan = infos[3]["orphan"]
    assert not _is_running(orphan)  # left behind by its run, stopped by the launcher
    summary = json.loads((exp / SUMMARY_FILE).read_text())
    assert summary["n_runs"] == 4 and summary["n_failed"] == 1
    out = capsys.readouterr().out
    assert "FAILED (return code 3)" in out and "3 of 4 runs succeeded, 1 failed" in out


def test_launcher_queues_repeats_run_id_first(tiny_script, tmp_path):
    variants, log_dirs = make_variants(VariantLevel(["algo"], [[{"lr": 0.5}]], ["only"]))
    results = run_experiments(
        [str(tiny_script)], "0slt_1cpu_0gpu", "rep", 3, variants, log_dirs,
        log_root=tmp_path, verbose=False, poll_interval=0.05,
    )  # fmt: skip
    assert [r.run_ID for r in results] == [0, 1, 2] and all(r.ok for r in results)
    assert all(r.run_slot == 0 for r in results)
    spans = sorted((info["start"], info["end"]) for info in _infos(results))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # one slot: one at a time


def test_launcher_rejects_bad_arguments(tiny_script, tmp_path):
    variants, log_dirs = _grid()
    with pytest.raises(FileNotFoundError, match=r"missing\.py"):
        run_experiments(tmp_path / "missing.py", "2cpu", "e", 1, variants, log_dirs)
    with pytest.raises(ValueError, match="log_dirs"):
        run_experiments(tiny_script, "2cpu", "e", 1, variants, log_dirs[:3])
    with pytest.raises(ValueError, match="runs_per_setting"):
        run_experiments(tiny_script, "2cpu", "e", 0, variants, log_dirs)
    with pytest.raises(ValueError, match="cpu_per_run"):
        run_experiments(tiny_script, "3cpu_2cpr", "e", 1, variants, log_dirs)
    assert not (Path.cwd() / "data" / "e").exists()


SLEEPER_SCRIPT = """
import os, signal, subprocess, sys, time
from tdrl.launch import get_run_args, load_variant

run = get_run_args()
if load_variant(run.log_dir)["stubborn"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only SIGKILL stops it
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
tmp = run.run_dir / "pids.tmp"
tmp.write_text(f"{os.getpid()} {child.pid}")
tmp.rename(run.run_dir / "pids.txt")
time.sleep(60)
"""

LAUNCHER_SCRIPT = """
import sys
from tdrl.launch import VariantLevel, make_variants, run_experiments

variants, log_dirs = make_variants(VariantLevel(["stubborn"], [[True], [False]], ["s", "p"]))
run_experiments(
    sys.argv[1], "2cpu_0saf", "exp", 2, variants, log_dirs,
    log_root=sys.argv[2], kill_timeout=1.0, poll_interval=0.05,
)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_launcher_leaves_no_process_behind(tmp_path, sig):
    (tmp_path / "sleeper.py").write_text(SLEEPER_SCRIPT)
    (tmp_path / "launcher.py").write_text(LAUNCHER_SCRIPT)
    launcher = subprocess.Popen(
        [sys.executable, "launcher.py", "sleeper.py", "logs"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        pid_files = [tmp_path / "logs" / "exp" / d / "run_0" / "pids.txt" for d in ("s", "p")]
        deadline = time.monotonic() + 30
        while not all(p.exists() for p in pid_files) and time.monotonic() < deadline:
            assert launcher.poll() is None, launcher.communicate()
            time.sleep(0.05)
        pids = [int(pid) for p in pid_files for pid in p.read_text().split()]
        assert all(_is_running(pid) for pid in pids)
        launcher.send_signal(sig)
        out, err = launcher.communicate(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0 and "KeyboardInterrupt" in err
    assert "interrupted: stopping 2 running runs" in out
    assert not [pid for pid in pids if _is_running(pid)]
    summary = json.loads((tmp_path / "logs" / "exp" / SUMMARY_FILE).read_text())
    assert summary["n_runs"] == 4 and summary["n_ended"] == 2 and summary["n_failed"] == 2
    assert not (tmp_path / "logs" / "exp" / "s" / "run_1").exists()  # never started


def test_killed_launcher_leaves_no_run_behind(tmp_path):
    """A SIGKILLed launcher cannot stop its runs itself: each run, in its own session,
    notices that its stdin pipe from the launcher closed and ends its process group."""
    (tmp_path / "sleeper.py").write_text(SLEEPER_SCRIPT)
    (tmp_path / "launcher.py").write_text(LAUNCHER_SCRIPT)
    launcher = subprocess.Popen(
        [sys.executable, "launcher.py", "sleeper.py", "logs"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:
        pid_files = [tmp_path / "logs" / "exp" / d / "run_0" / "pids.txt" for d in ("s", "p")]
        deadline = time.monotonic() + 30
        while not all(p.exists() for p in pid_files) and time.monotonic() < deadline:
            assert launcher.poll() is None
            time.sleep(0.05)
        pids = [int(pid) for p in pid_files for pid in p.read_text().split()]
        assert len(pids) == 4 and all(_is_running(pid) for pid in pids)
        launcher.kill()  # SIGKILL: no chance to stop the runs
        launcher.wait()
        deadline = time.monotonic() + 10
        while [pid for pid in pids if _is_running(pid)] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _is_running(pid)]  # runs and their children
    finally:
        if launcher.poll() is None:
            launcher.kill()
        for pid in pids:
            if _is_running(pid):
                os.kill(pid, signal.SIGKILL)


# ------------------------------------------------------------------------------- CLI


def _cli(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, "-m", "tdrl.cli", *args], cwd=cwd, capture_output=True, text=True
    )


def test_cli_launch_help_lists_options():
    proc = _cli("launch", "--help")
    assert proc.returncode == 0
    for flag in ("--grid", "--runs-per-setting", "--title", "--log-root", "--n-cpu-core"):
        assert flag in proc.stdout
    for flag in ("--cpu-per-run", "--n-gpu", "--affinity-code", "--kill-timeout"):
        assert flag in proc.stdout


def test_cli_launch_runs_a_grid(tiny_script, tmp_path):
    proc = _cli(
        "launch", str(tiny_script), "--grid", "algo.lr=0.1,0.01", "--grid", "batch=8,16",
        "--n-cpu-core", "2", "--cpu-per-run", "1", "--title", "cli", "--log-root", str(tmp_path),
        "--", "--extra", "1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the deliberate failure
    assert "3 of 4 runs succeeded, 1 failed" in proc.stdout
    exp = tmp_path / "cli"
    assert load_variant(exp / "lr_0.01" / "batch_16") == {"algo": {"lr": 0.01}, "batch": 16}
    info = json.loads((exp / "lr_0.01" / "batch_8" / "run_0" / "info.json").read_text())
    assert info["args"] == ["--extra", "1"]
    proc = _cli("launch", str(tiny_script), "--n-cpu-core", "3", "--cpu-per-run", "2")
    assert proc.returncode == 2 and "cpu_per_run" in proc.stderr
    proc = _cli("launch", str(tiny_script), "--grid", "novalues")
    assert proc.returncode == 2 and "--grid" in proc.stderr


def test_example_9_smoke(tmp_path):
    example = str(ROOT / "tdrl_examples" / "example_9.py")
    proc = subprocess.run(
        [sys.executable, example, "--n-steps", "512", "--seed", "1", "--log-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    with open(tmp_path / "run_0" / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and all(int(r["Diagnostics/CumSteps"]) >= 512 for r in rows)
    assert {(float(r["learning_rate"]), int(r["epochs"])) for r in rows} == {
        (1e-3, 4),
        (1e-3, 20),
        (3e-4, 4),
        (3e-4, 20),
    }
    params = json.loads((tmp_path / "run_0" / "params.json").read_text())
    assert params["seed"] == 1 and params["n_steps"] == 512
    run = tmp_path / "run_0" / "lr_3e-4" / "epochs_20" / "run_0"
    run_params = json.loads((run / "params.json").read_text())
    assert run_params["learning_rate"] == 3e-4 and run_params["epochs"] == 20
    assert (run / OUTPUT_FILE).exists()


# ------------------------------------------------------------ no run writes outside its root
MARKER_SCRIPT = """
from tdrl.launch import get_run_args

run = get_run_args()
run.run_dir.mkdir(parents=True, exist_ok=True)
(run.run_dir / "marker").write_text(run.log_dir)
"""


def _files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_cli_launch_never_writes_outside_its_log_root(tmp_path, monkeypatch, capsys):
    from tdrl.cli import main
    from tdrl.launch import safe_dir_name

    script = tmp_path / "marker.py"
    script.write_text(MARKER_SCRIPT)
    work = tmp_path / "work" / "deep"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    root = tmp_path / "a" / "b" / "root"  # deep enough that an escape stays in tmp_path
    values = f"../../escaped,{tmp_path}/abs_escape,..,.,a\\b,,x y,ünï"
    argv = ["launch", str(script), "--grid", f"algo.lr={values}", "--grid", "env_id=..,/"]
    argv += ["--title", "../../evil/..", "--log-root", str(root), "--n-cpu-core", "1"]
    assert main(argv) == 0, capsys.readouterr()
    written = set(_files_under(tmp_path)) - {script}
    exp = root / ".._.._evil_.."
    assert written and all(p.resolve().is_relative_to(exp.resolve()) for p in written), written
    markers = [p for p in written if p.name == "marker"]
    assert len(markers) == 8 * 2
    dirs = {p.parent.parent.parent.name for p in markers}
    assert dirs == {
        "lr_.._.._escaped", safe_dir_name(f"lr_{tmp_path}/abs_escape"), "lr_..", "lr_.", "lr_a_b",
        "lr_", "lr_x_y", "lr__n_",
    }  # fmt: skip
    assert {p.parent.parent.name for p in markers} == {"env_id_..", "env_id__"}


@pytest.mark.parametrize(
    "key", ["../../x", "{tmp}/abs", "a/b", "algo..lr", "x\\y", ".lr", "lr.", "1lr", "a b"]
)
def test_cli_launch_refuses_grid_keys_that_are_not_config_names(key, tmp_path, capsys):
    from tdrl.cli import main

    key = key.replace("{tmp}", str(tmp_path))  # an absolute path, inside tmp_path if it escapes
    script = tmp_path / "marker.py"
    script.write_text(MARKER_SCRIPT)
    with pytest.raises(SystemExit) as info:
        main(["launch", str(script), "--grid", f"{key}=1,2", "--log-root", str(tmp_path / "r")])
    assert info.value.code == 2
    assert "argument --grid: KEY must be a config name" in capsys.readouterr().err
    assert _files_under(tmp_path) == [script]


def test_safe_dir_name_makes_one_harmless_directory_name():
    from tdrl.launch import safe_dir_name

    cases = {
        "lr_3e-4": "lr_3e-4",
        "ALE/Pong-v5": "ALE_Pong-v5",
        "../../x": ".._.._x",
        "/abs": "_abs",
        "..": "__",
        ".": "_",
        "": "_",
        "a\x00b": "a_b",
        "tab\there\nnewline": "tab_here_newline",
        "a\\b": "a_b",
        "(64, 64)": "_64_64_",
    }
    for text, name in cases.items():
        assert safe_dir_name(text) == name, text
    long_a, long_b = "v" * 300 + "a", "v" * 300 + "b"
    assert len(safe_dir_name(long_a)) == 100 and safe_dir_name(long_a) != safe_dir_name(long_b)


@pytest.mark.parametrize(
    "name", ["../x", "/abs", "a/../../b", ".", "", "..", "a\\b", "a\x00b", "a//b"]
)
def test_make_variants_refuses_dir_names_that_could_escape(name):
    with pytest.raises(ValueError, match=r"dir name .* is not a safe relative directory"):
        make_variants(VariantLevel(["lr"], [[1], [2]], ["ok", name]))
    make_variants(VariantLevel(["lr"], [[1], [2]], ["ok", "nested/ok"]))  # nesting is fine


def test_run_experiments_refuses_run_dirs_outside_the_experiment(tiny_script, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "exp").mkdir()
    (root / "exp" / "link").symlink_to(outside, target_is_directory=True)
    cases = [
        ("exp", ["ok", "../../escaped"], r"log_dirs\[1\] '\.\./\.\./escaped' leads outside"),
        ("exp", ["ok", str(outside)], r"log_dirs\[1\] .* leads outside"),
        ("exp", ["ok", "link/run"], r"log_dirs\[1\] 'link/run' leads outside"),
        ("exp", ["ok", "a\x00b"], r"log_dirs\[1\] must be a path without NUL"),
        ("../up", ["ok", "b"], r"experiment_title '\.\./up' leads outside log_root"),
        (str(outside), ["ok", "b"], "experiment_title .* leads outside log_root"),
        ("e\x00", ["ok", "b"], "experiment_title must be a path without NUL"),
    ]
    for title, log_dirs, match in cases:
        with pytest.raises(ValueError, match=match):
            run_experiments(tiny_script, "1cpu", title, 1, [{}, {}], log_dirs, log_root=root)
    assert not list(outside.iterdir()) and [p.name for p in root.rglob("*")] == ["exp", "link"]


def test_run_experiments_refuses_bad_timeouts_and_arguments(tiny_script, tmp_path):
    variants, log_dirs = _grid()
    kw = {"log_root": tmp_path / "root"}
    bad = [
        ({"kill_timeout": -1.0}, "kill_timeout must be a finite number"),
        ({"kill_timeout": math.nan}, "kill_timeout must be a finite number"),
        ({"poll_interval": 0}, "poll_interval must be a finite number"),
        ({"poll_interval": math.inf}, "poll_interval must be a finite number"),
        ({"verbose": "yes"}, "verbose must be True or False"),
        ({"common_args": [1]}, r"common_args\[0\] must be a string"),
        ({"common_args": "--flag"}, "common_args must be a sequence of strings"),
        ({"runs_args": [[], [], [], [None]]}, r"runs_args\[3\]\[0\] must be a string"),
    ]
    for extra, match in bad:
        with pytest.raises(ValueError, match=match):
            run_experiments(tiny_script, "1cpu", "e", 1, variants, log_dirs, **kw, **extra)
    with pytest.raises(FileNotFoundError, match="python_executable"):
        run_experiments(
            tiny_script, "1cpu", "e", 1, variants, log_dirs, **kw, python_executable="no-python"
        )
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--kill-timeout", "-1", "argument --kill-timeout: must be a number >= 0.0"),
        ("--kill-timeout", "nan", "argument --kill-timeout: must be a finite number"),
        ("--runs-per-setting", "0", "argument --runs-per-setting: must be a positive int"),
        ("--n-cpu-core", "1.5", "argument --n-cpu-core: must be a positive int, got 1.5"),
        ("--n-gpu", "-1", "argument --n-gpu: must be a non-negative int, got -1"),
    ],
)
def test_cli_launch_refuses_bad_numbers(flag, value, message, tiny_script, capsys):
    from tdrl.cli import main

    with pytest.raises(SystemExit) as info:
        main(["launch", str(tiny_script), flag, value])
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_affinity_counts_take_whole_floats():
    assert make_affinity(n_cpu_core=4.0, cpu_per_run=2.0, run_slot=1.0).master_cpus == (2, 3)
    assert encode_affinity(n_cpu_core=2.0, cpu_per_run=1.0) == encode_affinity(
        n_cpu_core=2, cpu_per_run=1
    )


def test_apply_affinity_refuses_a_fractional_thread_count():
    with pytest.raises(ValueError, match=r"torch_threads must be a positive int, got 2\.5"):
        apply_affinity({"master_torch_threads": 2.5, "set_affinity": False})
