"""Contract tests of the serial sampler on deterministic envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
from tdrl.agents.base import Agent
from tdrl.envs import TrajInfo
from tdrl.samplers import SerialSampler
from tdrl.testing import ContinuousIdentityEnv, CountingEnv


class CyclingAgent(Agent):
    """Plays actions 0, 1, 2, 0, ... per env (a fixed, known policy)."""

    def __init__(self, n_actions: int = 3):
        super().__init__(model=torch.nn.Linear(1, 1))
        self.n_actions = n_actions
        self.calls = 0

    def step(self, observation, prev_action, prev_reward):
        action = torch.full((observation.shape[0],), self.calls % self.n_actions)
        self.calls += 1
        return action, {"value": torch.zeros(observation.shape[0])}


def _sampler(env_kwargs=None, **kwargs):
    kw = {"batch_T": 7, "batch_B": 3, "max_decorrelation_steps": 0}
    kw.update(kwargs)
    return SerialSampler(CountingEnv, env_kwargs or {"episode_length": 3}, **kw)


def _check_batch(s):
    """Check every transition of a CountingEnv batch against the env's rules."""
    obs, nxt = s["observation"], s["next"]
    T, B = s.batch_size
    for b in range(B):
        for t in range(T):
            k = obs[t, b, 0].item()
            a = s["action"][t, b].item()
            assert nxt["reward"][t, b, 0].item() == pytest.approx(k + 1 + a / 10)
            assert nxt["observation"][t, b, 0].item() == k + 1
            done = nxt["done"][t, b, 0].item()
            assert done == (k + 1 == 3)
            if t + 1 < T:
                if done:
                    assert obs[t + 1, b, 0].item() == 0
                    assert obs[t + 1, b, 1].item() == obs[t, b, 1].item() + 1
                    assert s["prev_action"][t + 1, b].item() == 0
                    assert s["prev_reward"][t + 1, b, 0].item() == 0.0
                else:
                    torch.testing.assert_close(obs[t + 1, b], nxt["observation"][t, b])
                    assert s["prev_action"][t + 1, b].item() == a
                    assert s["prev_reward"][t + 1, b, 0].item() == pytest.approx(
                        nxt["reward"][t, b, 0].item()
                    )


def test_batch_layout_and_keys():
    sampler = _sampler()
    sampler.initialize(CategoricalPgAgent(), seed=0)
    s, _ = sampler.obtain_samples(0)
    assert s.batch_size == (7, 3)
    assert s.names == ["time", None]
    for key in [
        "observation",
        "prev_action",
        "prev_reward",
        "action",
        "log_prob",
        "value",
        "logits",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "done"),
        ("next", "terminated"),
        ("next", "truncated"),
    ]:
        assert key in s.keys(True), key
    assert s["next", "reward"].shape == (7, 3, 1)
    assert s["next", "done"].dtype == torch.bool
    assert s["action"].dtype == torch.int64
    sampler.shutdown()


def test_counting_env_transitions_resets_and_prev_inputs():
    sampler = _sampler()
    sampler.initialize(CyclingAgent(), seed=0, traj_info_kwargs={"discount": 0.5})
    first, infos = sampler.obtain_samples(0)
    _check_batch(first)
    first = first.clone()
    # 7 steps of 3-step episodes from k=0: episodes end at t=2 and t=5 in every env.
    assert len(infos) == 2 * 3
    assert all(i.Length == 3 for i in infos)
    # Rewards of env 0's first episode: k + 1 + a/10 for k = 0, 1, 2.
    actions = first["action"][:3, 0].tolist()
    assert len(set(actions)) == 3  # the cycling agent's actions
    ep0 = [k + 1 + a / 10 for k, a in enumerate(actions)]
    assert infos[0].Return == pytest.approx(sum(ep0))
    assert infos[0].DiscountedReturn == pytest.approx(ep0[0] + 0.5 * ep0[1] + 0.25 * ep0[2])
    assert infos[0].NonzeroRewards == 3
    # The next batch continues where this one stopped (carried obs and prev inputs).
    second, _ = sampler.obtain_samples(1)
    _check_batch(second)
    for b in range(3):
        torch.testing.assert_close(second["observation"][0, b], first["next", "observation"][-1, b])
        assert second["prev_action"][0, b].item() == first["action"][-1, b].item()


def test_truncation_kept_apart_from_termination():
    sampler = _sampler({"episode_length": 3, "truncate": True})
    sampler.initialize(CyclingAgent(), seed=0)
    s, _ = sampler.obtain_samples(0)
    nxt = s["next"]
    assert nxt["truncated"].any() and not nxt["terminated"].any()
    torch.testing.assert_close(nxt["done"], nxt["truncated"])
    sampler = _sampler({"episode_length": 3, "truncate": False})
    sampler.initialize(CyclingAgent(), seed=0)
    s, _ = sampler.obtain_samples(0)
    assert s["next", "terminated"].any() and not s["next", "truncated"].any()


def test_decorrelation_spreads_start_states_deterministically():
    def starts(seed, max_steps):
        sampler = SerialSampler(
            CountingEnv,
            {"episode_length": 1000},
            batch_T=1,
            batch_B=8,
            max_decorrelation_steps=max_steps,
        )
        sampler.initialize(CyclingAgent(), seed=seed)
        s, _ = sampler.obtain_samples(0)
        return s["observation"][0, :, 0].tolist()

    assert starts(0, 0) == [0.0] * 8
    spread = starts(0, 100)
    assert len(set(spread)) > 4 and max(spread) < 100
    assert starts(0, 100) == spread
    assert starts(1, 100) != spread


def test_decorrelation_sets_prev_inputs_consistently():
    sampler = SerialSampler(
        CountingEnv, {"episode_length": 4}, batch_T=5, batch_B=6, max_decorrelation_steps=30
    )
    sampler.initialize(CyclingAgent(), seed=3)
    s, _ = sampler.obtain_samples(0)
    for b in range(6):
        k = s["observation"][0, b, 0].item()
        if k == 0:
            assert s["prev_action"][0, b].item() == 0 and s["prev_reward"][0, b, 0].item() == 0
        else:  # the previous random step's reward is k + a/10 with a the previous action
            a = s["prev_action"][0, b].item()
            assert s["prev_reward"][0, b, 0].item() == pytest.approx(k + a / 10)


def test_same_seed_same_batches():
    def run(seed):
        sampler = SerialSampler(
            env_kwargs={"id": "CartPole-v1"}, batch_T=16, batch_B=4, max_decorrelation_steps=20
        )
        torch.manual_seed(seed)
        sampler.initialize(CategoricalPgAgent(), seed=seed)
        return sampler.obtain_samples(0)[0].clone()

    a, b, c = run(0), run(0), run(1)
    assert (a == b).all()
    assert not (a["observation"] == c["observation"]).all()


def test_box_actions_clipped_for_env_not_in_buffer():
    received = []

    class Recorder(ContinuousIdentityEnv):
        def step(self, action):
            received.append(np.array(action))
            return super().step(action)

    class BigAgent(Agent):
        def __init__(self):
            super().__init__(model=torch.nn.Linear(1, 1))

        def step(self, observation, prev_action, prev_reward):
            return torch.full((observation.shape[0], 2), 5.0), {}

    sampler = SerialSampler(Recorder, {"dim": 2}, batch_T=2, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(BigAgent(), seed=0)
    s, _ = sampler.obtain_samples(0)
    assert (s["action"] == 5.0).all()
    assert all((r == 1.0).all() for r in received)


def test_dict_observation_flows_to_buffer():
    class DictEnv(CountingEnv):
        def __init__(self):
            super().__init__(episode_length=2)
            self.observation_space = gym.spaces.Dict(
                {
                    "counts": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                    "pixels": gym.spaces.Box(0, 255, (2, 2), np.uint8),
                }
            )

        def _obs(self):
            return {"counts": super()._obs(), "pixels": np.full((2, 2), self._k, np.uint8)}

    class DictAgent(Agent):
        def __init__(self):
            super().__init__(model=torch.nn.Linear(1, 1))

        def step(self, observation, prev_action, prev_reward):
            assert set(observation.keys()) == {"counts", "pixels"}
            return torch.zeros(observation.batch_size[0], dtype=torch.int64), {}

    sampler = SerialSampler(DictEnv, batch_T=4, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(DictAgent(), seed=0)
    s, _ = sampler.obtain_samples(0)
    assert s["observation", "pixels"].dtype == torch.uint8
    assert s["observation", "pixels"][:, 0, 0, 0].tolist() == [0, 1, 0, 1]
    assert s["next", "observation", "counts"][:, 0, 0].tolist() == [1, 2, 1, 2]


def test_env_specific_traj_info_fields():
    class KTrajInfo(TrajInfo):
        def __init__(self):
            super().__init__()
            self.MaxK = 0

        def step_info(self, info):
            self.MaxK = max(self.MaxK, info["k"])

    sampler = _sampler(traj_info_cls=KTrajInfo)
    sampler.initialize(CyclingAgent(), seed=0)
    _, infos = sampler.obtain_samples(0)
    assert infos and all(isinstance(i, KTrajInfo) and i.MaxK == 3 for i in infos)
    assert "MaxK" in infos[0].fields()


def test_evaluation_counts_only_completed_episodes():
    sampler = _sampler(
        {"episode_length": 4}, eval_n_envs=2, eval_max_steps=10, eval_max_trajectories=None
    )
    agent = CyclingAgent()
    sampler.initialize(agent, seed=0)
    infos = sampler.evaluate_agent(0)
    # 10 steps over 2 envs = 5 steps each: one complete 4-step episode per env.
    assert len(infos) == 2 and all(i.Length == 4 for i in infos)
    assert agent.mode == "eval"
    sampler = _sampler({"episode_length": 2}, eval_n_envs=2, eval_max_trajectories=3)
    sampler.initialize(CyclingAgent(), seed=0)
    assert len(sampler.evaluate_agent(0)) == 3


def test_eval_mode_deterministic_gaussian():
    sampler = SerialSampler(
        ContinuousIdentityEnv,
        batch_T=2,
        batch_B=2,
        eval_n_envs=1,
        eval_max_trajectories=1,
        max_decorrelation_steps=0,
    )
    agent = GaussianPgAgent(eval_deterministic=True)
    sampler.initialize(agent, seed=0)
    agent.eval_mode(0)
    obs = torch.zeros(4, 2)
    a1, _ = agent.step(obs, None, None)
    a2, _ = agent.step(obs, None, None)
    torch.testing.assert_close(a1, a2)
    agent.sample_mode(0)
    a3, _ = agent.step(obs, None, None)
    assert not torch.allclose(a1, a3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_T": 0}, "batch_T"),
        ({"batch_B": -1}, "batch_B"),
        ({"batch_B": 2.5}, "batch_B"),
        ({"max_decorrelation_steps": -3}, "max_decorrelation_steps"),
        ({"eval_n_envs": 2}, "eval_max_steps"),
        ({"eval_n_envs": 1, "eval_max_steps": 0}, "eval_max_steps"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, match):
    base = {"batch_T": 4, "batch_B": 2}
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        SerialSampler(CountingEnv, **base)


def test_bad_env_fn():
    with pytest.raises(TypeError, match="env_fn"):
        SerialSampler("CartPole-v1", batch_T=2, batch_B=2)
    sampler = SerialSampler(lambda: object(), batch_T=2, batch_B=2)
    with pytest.raises(TypeError, match="env_fn must return"):
        sampler.initialize(CategoricalPgAgent(), seed=0)
    with pytest.raises(TypeError, match="Discrete"):
        SerialSampler(ContinuousIdentityEnv, batch_T=2, batch_B=1).initialize(
            CategoricalPgAgent(), seed=0
        )
    with pytest.raises(RuntimeError, match="initialize"):
        SerialSampler(CountingEnv, batch_T=2, batch_B=1).obtain_samples(0)
