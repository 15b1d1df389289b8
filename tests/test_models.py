"""Models and agents: shapes, running statistics, the console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
from tdrl.models import MlpModel, RunningMeanStd
from tdrl.models.pg import CategoricalPgMlpModel, GaussianPgMlpModel


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4)) * np.array([1, 10, 0.1, 1])
    rms = RunningMeanStd((4,))
    for chunk in np.array_split(data, 7):
        rms.update(torch.as_tensor(chunk).reshape(-1, 4))
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-10)
    assert rms.count.item() == 1000
    x = torch.as_tensor(data[:5], dtype=torch.float32)
    expected = (data[:5] - data.mean(0)) / data.std(0)
    np.testing.assert_allclose(rms(x).numpy(), np.clip(expected, -10, 10), rtol=1e-4, atol=1e-5)


def test_running_mean_std_in_state_dict_and_updated_by_agent():
    agent = GaussianPgAgent(model_kwargs={"normalize_observation": True})
    import gymnasium as gym

    from tdrl.envs import space_to_spec

    box = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    agent.initialize(space_to_spec(box), space_to_spec(box))
    assert "model.obs_rms.mean" in agent.state_dict()
    agent.update_obs_rms(torch.ones(5, 2, 3) * 4.0)
    torch.testing.assert_close(agent.model.obs_rms.mean, torch.full((3,), 4.0, dtype=torch.float64))


@pytest.mark.parametrize("shared", [False, True])
def test_pg_models_shapes(shared):
    cat = CategoricalPgMlpModel(5, 3, shared=shared)
    logits, value = cat(torch.zeros(7, 2, 5), None, None)
    assert logits.shape == (7, 2, 3) and value.shape == (7, 2)
    torch.testing.assert_close(cat.value(torch.zeros(7, 2, 5)), value)
    gauss = GaussianPgMlpModel(5, 2, shared=shared, init_log_std=-1.0)
    mu, log_std, value = gauss(torch.zeros(4, 5), None, None)
    assert mu.shape == log_std.shape == (4, 2) and value.shape == (4,)
    assert (log_std == -1.0).all() and (mu.abs() <= 1).all()
    assert len(list(gauss.parameters())) == (9 if shared else 13)


def test_mlp_model():
    assert MlpModel(3, [8, 8], 2)(torch.zeros(4, 3)).shape == (4, 2)
    assert MlpModel(3, [8], None).output_size == 8
    with pytest.raises(ValueError, match="input_size"):
        MlpModel(0, [4])


def test_agent_forward_matches_step_log_prob():
    import gymnasium as gym

    from tdrl.envs import space_to_spec

    torch.manual_seed(0)
    agent = CategoricalPgAgent()
    agent.initialize(
        space_to_spec(gym.spaces.Box(-1.0, 1.0, (4,), np.float32)),
        space_to_spec(gym.spaces.Discrete(3)),
    )
    obs = torch.randn(6, 4)
    action, info = agent.step(obs, torch.zeros(6, dtype=torch.int64), torch.zeros(6, 1))
    td = TensorDict(
        {"observation": obs, "prev_action": torch.zeros(6), "prev_reward": torch.zeros(6, 1)},
        batch_size=[6],
    )
    dist = agent.distribution(agent(td))
    torch.testing.assert_close(dist.log_prob(action), info["log_prob"])
    torch.testing.assert_close(agent(td)["value"], info["value"])


def test_console_script_installed():
    exe = Path(sys.executable).parent / "tdrl"
    assert exe.exists(), "pip install -e . should install the tdrl console script"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout
