"""tdrl on a Ray cluster of two nodes, both started on this machine (``ray.cluster_utils``).

Marked ``slow`` (``make test-all``): starting the second node costs what the default suite
cannot spare.

Each node offers one CPU, so two runs (or two sampler actors) of one CPU each can only run
at once when one is on each node.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tdrl.samplers import SerialSampler
from tdrl.testing import CountingEnv, FixedActionAgent

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from tdrl.launch.ray_launcher import run_experiments_ray  # noqa: E402
from tdrl.samplers.ray_sampler import RaySampler  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_launch import TINY_SCRIPT, _grid, _infos  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        tests = os.pathsep.join(
            filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])
        )
        env = {"env_vars": {"PYTHONPATH": tests}}  # the actors import _node_id from here
        ray.init(address=cluster.address, log_to_driver=False, runtime_env=env)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.timeout(300)
def test_grid_and_sampler_spread_over_two_nodes(two_nodes, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    script = tmp_path / "tiny.py"
    script.write_text(TINY_SCRIPT)
    variants, log_dirs = _grid()
    results = run_experiments_ray(
        script, "exp", 1, variants[1:3], log_dirs[1:3], log_root=tmp_path, verbose=False
    )
    assert [r.returncode for r in results] == [0, 0]
    spans = [(info["start"], info["end"]) for info in _infos(results)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]  # one run per node
    summary = json.loads((tmp_path / "exp" / "launch_summary.json").read_text())
    assert summary["n_failed"] == 0

    kw = {"batch_T": 9, "batch_B": 4, "max_decorrelation_steps": 7}
    env_kw = {"episode_length": 5, "n_actions": 3}
    sampler = RaySampler(CountingEnv, env_kw, n_workers=2, **kw)
    agent = FixedActionAgent()
    sampler.initialize(agent, seed=3)
    reference = SerialSampler(CountingEnv, env_kw, **kw)
    ref_agent = FixedActionAgent()
    reference.initialize(ref_agent, seed=3)
    try:
        for itr in range(2):
            agent.sample_mode(itr)
            ref_agent.sample_mode(itr)
            got, _ = sampler.obtain_samples(itr)
            want, _ = reference.obtain_samples(itr)
            assert (got == want).all()
        nodes = {ray.get(a.__ray_call__.remote(_node_id)) for a in sampler._actors}
        assert len(nodes) == 2
    finally:
        sampler.shutdown()
        reference.shutdown()


def _node_id(_worker):
    return ray.get_runtime_context().get_node_id()
