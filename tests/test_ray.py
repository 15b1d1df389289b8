"""tdrl on Ray: the launcher backend and RaySampler, on a local Ray instance of 2 CPUs.

Marked ``ray`` and kept in ``tests/test_ray*.py``: ``make test`` runs these files in a
second pytest run with Ray importable (see the Makefile); the rest of the suite runs
without Ray, which TorchRL would otherwise import in every process.

One Ray instance serves the whole module (about 3 s to start); each sampler's actors cost
a second or two of start-up (their processes import torch and tdrl).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from operator import attrgetter
from pathlib import Path

import pytest
import torch

from tdrl.agents.dqn import DqnAgent
from tdrl.launch import FINISHED_FILE, SUMMARY_FILE, VARIANT_FILE
from tdrl.samplers import SerialSampler
from tdrl.testing import CountingEnv, FixedActionAgent
from tdrl.utils.processes import ChildFailed

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")

from tdrl.launch.ray_launcher import run_experiments_ray  # noqa: E402
from tdrl.samplers.ray_sampler import RaySampler  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_async_rl import _dqn_run, _rows  # noqa: E402
from test_collector_sampler import check_weights_and_mode_reach_the_workers  # noqa: E402
from test_launch import TINY_SCRIPT, _grid, _infos, _is_running  # noqa: E402
from test_parallel_samplers import _batches, _BrokenEnv  # noqa: E402
from test_recurrent import _collect  # noqa: E402

ENV_KW = {"episode_length": 5, "n_actions": 3}
ROOT = Path(__file__).resolve().parents[1]
DRIVER_PID = int(os.environ.setdefault("TDRL_TEST_DRIVER_PID", str(os.getpid())))


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # the actors import this module's test envs
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    yield
    ray.shutdown()


# ------------------------------------------------------------------------------ launcher


def test_ray_launcher_runs_a_grid_isolates_a_failure_and_skips_finished_runs(tmp_path, capsys):
    script = tmp_path / "tiny.py"
    script.write_text(TINY_SCRIPT)
    variants, log_dirs = _grid()
    args = [["--v", str(i)] for i in range(4)]
    results = run_experiments_ray(
        script, "exp", 1, variants, log_dirs,
        log_root=tmp_path, common_args=["--common"], runs_args=args, cpus_per_run=1,
    )  # fmt: skip
    exp = tmp_path / "exp"
    assert [r.log_dir for r in results] == [str(exp / d) for d in log_dirs]
    assert [r.returncode for r in results] == [3, 0, 0, 0]
    assert all(r.run_slot == -1 and r.host and not r.skipped for r in results)
    infos = _infos(results)
    for i, (info, variant) in enumerate(zip(infos, variants, strict=True)):
        assert json.loads((exp / log_dirs[i] / VARIANT_FILE).read_text()) == variant
        assert info["variant"] == variant and info["args"] == ["--common", "--v", str(i)]
        assert info["code"] == "0slt_1cpu_0gpu_0saf"
    assert "deliberate failure" in Path(results[0].output).read_text()
    # 2 Ray CPUs, 1 per run: never more than two at once, and two did overlap
    spans = [(info["start"], info["end"]) for info in infos]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2
    assert not _is_running(infos[3]["orphan"])  # left by its run, stopped by its task
    summary = json.loads((exp / SUMMARY_FILE).read_text())
    assert summary["n_runs"] == 4 and summary["n_failed"] == 1
    finished = [(Path(r.log_dir) / "run_0" / FINISHED_FILE).is_file() for r in results]
    assert finished == [False, True, True, True]
    assert "3 of 4 runs succeeded, 1 failed" in capsys.readouterr().out
    # Relaunch: the finished runs are skipped, the failed one runs again.
    again = run_experiments_ray(script, "exp", 1, variants, log_dirs, log_root=tmp_path)
    assert [r.skipped for r in again] == [False, True, True, True]
    assert again[0].returncode == 3
    assert Path(results[0].output).read_text().count("deliberate failure") == 2
    assert "3 of 4 runs succeeded (3 skipped: finished earlier), 1 failed" in (
        capsys.readouterr().out
    )


def test_ray_launcher_checks_its_arguments(tmp_path):
    variants, log_dirs = _grid()
    script = tmp_path / "tiny.py"
    script.write_text(TINY_SCRIPT)
    with pytest.raises(FileNotFoundError, match="missing"):
        run_experiments_ray(tmp_path / "missing.py", "e", 1, variants, log_dirs)
    with pytest.raises(ValueError, match="gpus_per_run"):
        run_experiments_ray(script, "e", 1, variants, log_dirs, gpus_per_run=-1)
    with pytest.raises(ValueError, match="cpus_per_run"):
        run_experiments_ray(script, "e", 1, variants, log_dirs, cpus_per_run=0)
    with pytest.raises(ValueError, match="log_dirs"):
        run_experiments_ray(script, "e", 1, variants, log_dirs[:2])
    for kwargs in ({"gpus_per_run": 1}, {"cpus_per_run": 3}):  # more than any node has
        with pytest.raises(ValueError, match="no Ray node can take a run of cpus_per_run"):
            run_experiments_ray(script, "e", 1, variants, log_dirs, log_root=tmp_path, **kwargs)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(
    ("cpus", "gpus", "code"),
    [(1, 0, "0slt_1cpu_0gpu_0saf"), (4, 0, "0slt_4cpu_0gpu_4cpr_0saf"),
     (1, 0.5, "0slt_1cpu_1gpu_0saf"), (1, 2, "0slt_2cpu_2gpu_2gpr_0saf")],
)  # fmt: skip
def test_a_ray_runs_affinity_code_gives_it_its_resources(cpus, gpus, code):
    from tdrl.launch import affinity_from_code
    from tdrl.launch.ray_launcher import run_affinity_code

    assert run_affinity_code(cpus, gpus) == code
    affinity_from_code(code)  # a code launched scripts can read


SLEEPY = """
import sys, time
from tdrl.launch import get_run_args
run = get_run_args()
(run.run_dir / "started").write_text("1")
time.sleep(120)
"""

DRIVER = """
import sys
from tdrl.launch import make_variants, VariantLevel
from tdrl.launch.ray_launcher import run_experiments_ray
variants, dirs = make_variants(VariantLevel(["x"], [[1], [2]], ["x1", "x2"]))
run_experiments_ray(sys.argv[1], "stop", 1, variants, dirs, log_root=sys.argv[2],
                    kill_timeout=2, address=None)
"""


def test_ctrl_c_stops_every_ray_run(tmp_path):
    """SIGINT to a driver that started its own Ray instance: no run outlives it."""
    (tmp_path / "sleepy.py").write_text(SLEEPY)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "sleepy.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    started = [tmp_path / "stop" / d / "run_0" / "started" for d in ("x1", "x2")]
    deadline = time.monotonic() + 90
    while not all(p.exists() for p in started) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    assert all(p.exists() for p in started)
    pids = _run_pids(tmp_path / "sleepy.py")
    assert len(pids) == 2
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "interrupted: stopping 2 runs" in out, out
    time.sleep(0.5)
    assert not [p for p in pids if _is_running(p)]
    summary = json.loads((tmp_path / "stop" / SUMMARY_FILE).read_text())
    assert summary["n_failed"] == 2 and {r["error"] for r in summary["runs"]} == {"stopped"}


def _run_pids(script: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"{script} 0slt"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_cli_launch_backend_ray(tmp_path):
    script = tmp_path / "tiny.py"
    script.write_text(TINY_SCRIPT)
    from tdrl.cli import main

    code = main([
        "launch", str(script), "--grid", "batch=8,16", "--backend", "ray",
        "--title", "cli", "--log-root", str(tmp_path), "--", "--x",
    ])  # fmt: skip
    assert code == 0
    info = json.loads((tmp_path / "cli" / "batch_16" / "run_0" / "info.json").read_text())
    assert info["args"] == ["--x"] and info["variant"] == {"batch": 16}
    assert main(["launch", str(script), "--address", "auto"]) == 2  # local backend


# ------------------------------------------------------------------------------- sampler


@pytest.fixture(scope="module")
def serial_reference():
    return _batches(SerialSampler, FixedActionAgent())


def test_ray_sampler_batches_equal_the_serial_samplers(serial_reference):
    """Same seeds, a deterministic agent changed between batches: identical batches."""
    batches = _batches(RaySampler, FixedActionAgent())
    for (got, trajs), (want, want_trajs) in zip(batches, serial_reference, strict=True):
        assert (got == want).all()
        assert trajs == want_trajs and want_trajs
    assert not torch.equal(batches[0][0]["action"], batches[1][0]["action"])


def test_recurrent_batches_equal_the_serial_samplers():
    """A recurrent agent: the actors carry each env's LSTM state as the serial sampler does
    (state, next state, resets), batch after batch while the learner's weights change."""
    for (ours, ours_trajs), (ref, ref_trajs) in zip(
        _collect(RaySampler), _collect(SerialSampler), strict=True
    ):
        assert ours_trajs == ref_trajs
        assert torch.equal(ours["action"], ref["action"])
        assert torch.equal(ours["is_init"], ref["is_init"])
        for key in ("rnn_state", ("next", "rnn_state"), "value"):
            torch.testing.assert_close(ours[key], ref[key], atol=1e-5, rtol=0)


def _serial_with_offsets(offsets):
    sampler = SerialSampler(CountingEnv, ENV_KW, batch_T=9, batch_B=4, max_decorrelation_steps=7)
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=3, traj_info_kwargs={"discount": 0.9})
    out = []
    for itr, offset in enumerate(offsets):
        agent.model.offset.data.fill_(offset)
        agent.sample_mode(itr)
        out.append(sampler.obtain_samples(itr)[0].clone())
    sampler.shutdown()
    return out


def test_prefetch_acts_one_batch_behind():
    """prefetch=True: batch k is acted with the weights the learner had after batch k-2
    (the learner's update after batch k-1 comes once batch k is under way)."""
    lagged = _batches(RaySampler, FixedActionAgent(), n_batches=3, prefetch=True, n_workers=1)
    for got, want in zip(lagged, _serial_with_offsets([0, 0, 1]), strict=True):
        assert (got[0] == want).all()
    on_time = _serial_with_offsets([0, 1, 2])
    assert not (lagged[1][0]["action"] == on_time[1]["action"]).all()


def test_weights_are_broadcast_every_weight_sync_interval_batches():
    """Synchronous batches with ``weight_sync_interval=2``: batch 1 still acts with the
    weights broadcast before batch 0, batch 2 with the learner's current ones."""
    got = _batches(RaySampler, FixedActionAgent(), n_workers=1, weight_sync_interval=2)
    for (ours, _), want in zip(got, _serial_with_offsets([0, 0, 2]), strict=True):
        assert (ours == want).all()


def test_per_actor_epsilon_for_dqn():
    """Ape-X's per-env ε: each actor's envs act with their global ranks' epsilons."""
    agent = DqnAgent(eps_final=0.4, eps_final_min=0.01, model_kwargs={"hidden_sizes": (8,)})
    sampler = RaySampler(
        env_kwargs={"id": "CartPole-v1"}, batch_T=4, batch_B=4, n_workers=2,
        max_decorrelation_steps=0,
    )  # fmt: skip
    sampler.initialize(agent, seed=0)
    try:
        agent.sample_mode(0)
        sampler.obtain_samples(0)
        actors = sampler._actors
        got = [
            ray.get(a.__ray_call__.remote(attrgetter("agent.exploration.final_vec")))
            for a in actors
        ]
        agent.collector_initialize(4, [0, 1, 2, 3])
        want = agent.exploration.final_vec
        assert [len(g) for g in got] == [2, 2]
        assert torch.equal(torch.cat(got), want) and len(set(want.tolist())) == 4
    finally:
        sampler.shutdown()


def test_a_killed_actor_is_restarted_then_named(capsys):
    """``on_worker_failure="restart"``: a lost actor is replaced and its batch collected
    again; past ``max_restarts`` (and with ``"raise"``) the loss fails the run, named."""
    kw = {"batch_T": 5, "batch_B": 2, "n_workers": 1, "max_decorrelation_steps": 0}
    agent = FixedActionAgent()
    sampler = RaySampler(CountingEnv, ENV_KW, on_worker_failure="restart", max_restarts=1, **kw)
    sampler.initialize(agent, seed=0)
    try:
        agent.sample_mode(0)
        first = sampler.obtain_samples(0)[0].clone()
        ray.kill(sampler._actors[0])
        samples, _ = sampler.obtain_samples(1)
        assert sampler.restarts == 1 and samples.batch_size == first.batch_size
        assert "tdrl-ray-sampler-0 was lost" in capsys.readouterr().out
        ray.kill(sampler._actors[0])
        with pytest.raises(ChildFailed, match="tdrl-ray-sampler-0 was lost"):
            sampler.obtain_samples(2)
    finally:
        sampler.shutdown()


def test_an_actor_error_names_the_actor_and_carries_its_traceback():
    sampler = RaySampler(
        _BrokenEnv, {}, batch_T=5, batch_B=1, n_workers=1, max_decorrelation_steps=0
    )
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=0)
    try:
        agent.sample_mode(0)
        with pytest.raises(ChildFailed, match=r"tdrl-ray-sampler-0 failed(.|\n)*env exploded"):
            sampler.obtain_samples(0)
    finally:
        sampler.shutdown()


class _OnlyInTheDriver(CountingEnv):
    def __init__(self, **kwargs):
        if os.getpid() != DRIVER_PID:
            raise RuntimeError("no env here on purpose")
        super().__init__(**kwargs)


def test_an_actor_that_cannot_start_is_named():
    sampler = RaySampler(_OnlyInTheDriver, {}, batch_T=2, batch_B=2, n_workers=1)
    sampler.initialize(FixedActionAgent(), seed=0)
    try:
        with pytest.raises(
            ChildFailed, match=r"tdrl-ray-sampler-0 failed to start(.|\n)*on purpose"
        ):
            sampler.obtain_samples(0)
    finally:
        sampler.shutdown()


def test_actors_the_instance_can_never_place_are_refused():
    sampler = RaySampler(CountingEnv, ENV_KW, batch_T=2, batch_B=4, n_workers=3)
    with pytest.raises(
        ValueError, match=r"n_workers=3 actors .* need 3 CPUs; the Ray instance has 2"
    ):
        sampler.initialize(FixedActionAgent(), seed=0)
    sampler.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"on_worker_failure": "ignore"}, "on_worker_failure"),
        ({"weight_sync_interval": 0}, "weight_sync_interval"),
        ({"n_workers": 9}, "n_workers"),
        ({"cpus_per_worker": 0}, "cpus_per_worker"),
        ({"prefetch": "yes"}, "prefetch"),
        ({"address": 6379}, "address"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RaySampler(CountingEnv, ENV_KW, batch_T=2, batch_B=4, **kwargs)


def test_async_rl_with_prefetching_actors_keeps_the_replay_ratio_throttle(tmp_path):
    def sampler(*args, **kwargs):
        return RaySampler(*args, n_workers=1, prefetch=True, weight_sync_interval=2, **kwargs)

    runner, algo, row, run_dir = _dqn_run(tmp_path, sampler_cls=sampler, n_steps=960)
    rows = _rows(run_dir)
    assert row["Diagnostics/CumSteps"] == 960 and algo.update_counter > 0
    for r in rows:
        assert float(r["Diagnostics/CumReplayRatio"]) <= algo.replay.replay_ratio + 1e-9
    assert algo.update_counter * algo.batch_size <= algo.replay.replay_ratio * 960
    assert runner.sampler.restarts == 0 and not runner.sampler._actors  # shut down


def test_torchrl_ray_collector_behind_collector_sampler():
    """CollectorSampler(collector="ray"): TorchRL's RayCollector, weights and mode followed."""
    check_weights_and_mode_reach_the_workers("ray")
    assert ray.is_initialized()  # the module's instance, not one the sampler started


def test_tdrl_imports_ray_only_inside_the_functions_that_use_it():
    """No tdrl module imports Ray at import time (TorchRL 0.14.1's own ``torchrl.data``
    does, when Ray is installed: docs/dependencies.md)."""
    import ast

    top_level = []
    for path in (ROOT / "tdrl").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            top_level += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "ray"]
    assert top_level == []
    assert "import ray\n" in (ROOT / "tdrl" / "utils" / "ray_support.py").read_text()


def test_missing_ray_is_one_line(monkeypatch, capsys):
    from tdrl.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["launch", str(Path(__file__)), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "tdrl[ray]"' in err and "Traceback" not in err


def test_an_address_nothing_listens_at_is_one_line_at_once():
    """Ray would wait about a minute and then exit the process; tdrl refuses at once."""
    import socket
    import time

    from tdrl.utils.ray_support import _check_reachable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens there
    start = time.monotonic()
    with pytest.raises(ConnectionError, match=f"no Ray instance answers at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")
    assert time.monotonic() - start < 10
    _check_reachable("auto")  # left to Ray
