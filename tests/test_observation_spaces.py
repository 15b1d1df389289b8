"""Observation spaces the default models take, and the ones they refuse with a way out.

Index observations (gymnasium ``Discrete``: FrozenLake, Taxi): the default model for
``n``-vectors sits behind ``OneHotObservation``; samplers and replay keep the index.
``[H, W, C]`` images (gymnasium's ``ALE/...`` ids) are refused naming tdrl's Atari path.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F  # noqa: N812 - torch's name

from tdrl.agents import CategoricalPgAgent, DqnAgent, R2d1Agent
from tdrl.agents.base import is_recurrent_model
from tdrl.algos import DQN, PPO
from tdrl.envs.spaces import space_to_spec
from tdrl.models.lstm import state_tensors
from tdrl.models.one_hot import OneHotObservation
from tdrl.runners import MinibatchRl, MinibatchRlEval
from tdrl.samplers import SerialSampler

FROZEN = {"id": "FrozenLake-v1", "is_slippery": False}


def _specs(n_states=16, n_actions=4):
    import gymnasium as gym

    return space_to_spec(gym.spaces.Discrete(n_states)), space_to_spec(
        gym.spaces.Discrete(n_actions)
    )


@pytest.mark.parametrize(
    "make", [CategoricalPgAgent, lambda: CategoricalPgAgent(recurrent=True), DqnAgent, R2d1Agent]
)
def test_the_default_model_sees_one_hot_vectors_of_the_index(make):
    agent = make()
    agent.initialize(*_specs())
    assert isinstance(agent.model, OneHotObservation)
    assert is_recurrent_model(agent.model) == is_recurrent_model(agent.model.model)
    index = torch.tensor([0, 5, 15])
    rest: tuple = (torch.zeros(3, dtype=torch.int64), torch.zeros(3, 1))
    if agent.recurrent:
        rest = (*rest, state_tensors(agent.initial_rnn_state(3)))
    got, want = agent.model(index, *rest), agent.model.model(F.one_hot(index, 16).float(), *rest)
    for a, b in zip(got, want, strict=True):
        if isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, b)
    state = agent.initial_rnn_state(3)
    agent.step(index, *rest[:2], *([] if state is None else [state]))  # acts on indices


def test_a_pg_model_value_is_computed_on_the_encoded_observation():
    agent = CategoricalPgAgent()
    agent.initialize(*_specs())
    index = torch.tensor([3, 7])
    inner = agent.model.model
    assert hasattr(inner, "value")
    torch.testing.assert_close(agent.model.value(index), inner.value(F.one_hot(index, 16).float()))
    dqn = DqnAgent()
    dqn.initialize(*_specs())
    assert not hasattr(dqn.model, "value") and not hasattr(dqn.model, "initial_state")


def test_the_batch_and_replay_store_the_index():
    sampler = SerialSampler(env_kwargs=FROZEN, batch_T=8, batch_B=2)
    sampler.initialize(DqnAgent(), seed=0)
    samples, _ = sampler.obtain_samples(0)
    assert samples["observation"].dtype == torch.int64 and samples["observation"].shape == (8, 2)
    assert int(samples["observation"].max()) < 16
    sampler.shutdown()


def test_ppo_learns_the_deterministic_frozen_lake():
    sampler = SerialSampler(
        env_kwargs=FROZEN, batch_T=32, batch_B=8, eval_n_envs=2, eval_max_trajectories=4
    )
    agent = CategoricalPgAgent(eval_deterministic=True)
    runner = MinibatchRlEval(
        PPO(entropy_loss_coeff=0.01),
        agent,
        sampler,
        n_steps=20_000,
        seed=0,
        log_interval_steps=10_000,
        progress_bar=False,
    )
    row = runner.train()
    assert row["ReturnAverage"] == 1.0  # every evaluation episode reaches the goal


def test_dqn_trains_on_taxi_without_error():
    sampler = SerialSampler(env_kwargs={"id": "Taxi-v4"}, batch_T=8, batch_B=2)
    algo = DQN(min_steps_learn=64, batch_size=16)
    runner = MinibatchRl(
        algo, DqnAgent(), sampler, n_steps=256, seed=0, log_interval_steps=128, progress_bar=False
    )
    runner.train()
    assert algo.update_counter > 0


@pytest.mark.parametrize("make", [CategoricalPgAgent, DqnAgent])
def test_an_hwc_image_is_refused_with_the_way_out(make):
    import gymnasium as gym

    image = space_to_spec(gym.spaces.Box(0, 255, (210, 160, 3), dtype="uint8"))
    with pytest.raises(
        TypeError, match=r"takes \[C, H, W\] frames; the observation \(210, 160, 3\)"
    ):
        make().initialize(image, _specs()[1])
    make().initialize(
        space_to_spec(gym.spaces.Box(0, 255, (4, 84, 84), dtype="uint8")), _specs()[1]
    )


def test_binary_and_shaped_categorical_observations_are_not_state_indices():
    from tdrl._compat import Binary, Categorical

    for spec in (Binary(n=5), Categorical(n=3, shape=(1,))):
        agent = CategoricalPgAgent()
        agent.initialize(spec, _specs()[1])
        assert not isinstance(agent.model, OneHotObservation), spec


def test_an_index_outside_the_states_is_refused_in_one_line():
    agent = DqnAgent()
    agent.initialize(*_specs(n_states=4))
    with pytest.raises(ValueError, match=r"indices in \[0, 4\), got \[1, 4\] .*start != 0"):
        agent.model(torch.tensor([1, 4]))


def test_observation_normalization_is_refused_for_state_indices():
    agent = CategoricalPgAgent(model_kwargs={"normalize_observation": True})
    with pytest.raises(TypeError, match="normalize_observation does not apply"):
        agent.initialize(*_specs())


class _ThreeActionQ(torch.nn.Module):
    """A model built for an env with 3 actions (CartPole has 2)."""

    def __init__(self, pg: bool = False):
        super().__init__()
        self.pi, self.v, self.pg = torch.nn.Linear(4, 3), torch.nn.Linear(4, 1), pg

    def forward(self, observation, prev_action, prev_reward):
        return (
            (self.pi(observation), self.v(observation)[..., 0]) if self.pg else self.pi(observation)
        )


@pytest.mark.parametrize("pg", [False, True], ids=["dqn", "pg"])
def test_a_model_for_another_action_count_is_refused_naming_both(pg):
    agent = (
        CategoricalPgAgent(model=_ThreeActionQ(pg=True)) if pg else DqnAgent(model=_ThreeActionQ())
    )
    sampler = SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=4, batch_B=2)
    with pytest.raises(ValueError, match=r"model gives 3 action values .*; the env has 2 actions"):
        sampler.initialize(agent, seed=0)


class _ColumnValue(torch.nn.Module):
    """A PG model returning its value as [N, 1], as Stable-Baselines3's models do."""

    def __init__(self, bad: bool = False):
        super().__init__()
        self.pi, self.v, self.bad = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2 if bad else 1), bad

    def forward(self, observation, prev_action, prev_reward):
        return self.pi(observation), self.v(observation)


def test_a_pg_value_of_shape_n_1_is_taken_and_other_shapes_refused():
    from tdrl.algos import A2C

    sampler = SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=8, batch_B=2)
    runner = MinibatchRl(
        A2C(), CategoricalPgAgent(model=_ColumnValue()), sampler, n_steps=64, progress_bar=False
    )
    row = runner.train()
    assert row["Diagnostics/CumSteps"] == 64
    bad = SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=8, batch_B=2)
    with pytest.raises(
        ValueError, match=r"value \(its last output\) must be \[2\] or \[2, 1\].* got \[2, 2\]"
    ):
        bad.initialize(CategoricalPgAgent(model=_ColumnValue(bad=True)), seed=0)
