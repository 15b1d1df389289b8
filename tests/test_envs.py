"""make_env, spaces, TrajInfo tracking."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torchrl.envs import GymEnv
from torchrl.envs.utils import check_env_specs

from tdrl.agents import CategoricalPgAgent
from tdrl.envs import TrajInfo, make_env, make_gym_env, space_to_spec, unwrap_gym_env
from tdrl.envs.traj_info import TrajTracker
from tdrl.samplers import SerialSampler
from tdrl.testing import CountingEnv


class DictObsEnv(gym.Env):
    """A Dict observation with an image and a float64 joint vector."""

    observation_space = gym.spaces.Dict(
        {
            "image": gym.spaces.Box(0, 255, (3, 4, 4), np.uint8),
            "joints": gym.spaces.Box(-1.0, 1.0, (5,), np.float64),
        }
    )
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 1.0, False, False, {}


def test_make_env_contract_cartpole():
    env = make_env("CartPole-v1", seed=0, max_episode_steps=5)
    check_env_specs(env)
    td = env.rollout(12, break_when_any_done=False)
    assert td["prev_action"][0].item() == 0
    assert td["prev_reward"][0].item() == 0.0
    # prev_action at t+1 is the action at t, except right after a reset.
    nxt = td["next"]
    torch.testing.assert_close(nxt["prev_action"], td["action"])
    torch.testing.assert_close(nxt["prev_reward"], nxt["reward"])
    # The 5-step limit truncates; it never terminates this early with these actions.
    assert nxt["truncated"][4].item() and not nxt["terminated"][4].item()
    assert nxt["done"][4].item()
    assert td["action"].dtype == torch.int64
    assert td["observation"].dtype == torch.float32


def test_make_env_resets_prev_action_after_done():
    env = make_env("CartPole-v1", seed=1, max_episode_steps=3)
    td = env.rollout(7, break_when_any_done=False)
    # Step 3 starts a new episode: null prev action and zero prev reward.
    assert td["prev_action"][3].item() == 0
    assert td["prev_reward"][3].item() == 0.0
    assert td["prev_reward"][2].item() == 1.0


def test_make_env_float64_becomes_float32_mujoco():
    env = make_env("HalfCheetah-v5", seed=0)
    assert env.observation_spec["observation"].dtype == torch.float32
    assert env.observation_spec["prev_action"].shape == torch.Size([6])
    td = env.rollout(3)
    assert td["observation"].dtype == torch.float32


def test_make_env_dict_observation_nested_untouched():
    env = make_env(DictObsEnv())
    check_env_specs(env)
    td = env.rollout(2)
    assert td["observation", "image"].shape == (2, 3, 4, 4)
    assert td["observation", "image"].dtype == torch.uint8
    assert td["observation", "joints"].dtype == torch.float32


def test_make_env_bad_input_names_it():
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        make_env("NoSuchEnv-v0")
    with pytest.raises(TypeError, match="not_a_kwarg"):
        make_env("CartPole-v1", not_a_kwarg=1)
    with pytest.raises(TypeError, match="id must be"):
        make_gym_env(42)


def test_unwrap_gym_env():
    raw = make_gym_env("CartPole-v1")
    assert unwrap_gym_env(raw) is raw
    wrapped = make_env("CartPole-v1")
    assert isinstance(unwrap_gym_env(wrapped), gym.Env)
    assert isinstance(unwrap_gym_env(make_env(DictObsEnv())), DictObsEnv)  # its RenameTransform
    assert isinstance(unwrap_gym_env(GymEnv("CartPole-v1")), gym.Env)
    with pytest.raises(TypeError, match="cannot step object"):
        unwrap_gym_env(object())


#: env_fns a sampler cannot step, and what the message must say. (TorchRL envs, transforms
#: included, are stepped through their own step: tests/test_torchrl_envs.py.)
UNSTEPPABLE = {
    "None": (lambda: None, ["returned None", "gymnasium.Env"]),
    "dict": (lambda: {"obs": 1}, ["returned dict", "gymnasium.Env"]),
    "string": (lambda: "CartPole-v1", ["returned str 'CartPole-v1'"]),
}


@pytest.mark.parametrize("case", list(UNSTEPPABLE))
def test_sampler_refuses_envs_it_cannot_step_as_given(case):
    """Neither a gymnasium env nor a TorchRL env: refused in one line."""
    env_fn, words = UNSTEPPABLE[case]
    sampler = SerialSampler(env_fn, batch_T=2, batch_B=2)
    with pytest.raises(TypeError) as info:
        sampler.initialize(CategoricalPgAgent(), seed=0)
    message = str(info.value)
    assert "\n" not in message and message.startswith("env_fn must return"), message
    for word in words:
        assert word in message, message
    assert "gymnasium.Env or a TorchRL EnvBase" in message  # says what is supported


def test_sampler_steps_make_env_envs_like_their_gymnasium_env():
    rewards = []
    for env_fn in (lambda: make_env("CartPole-v1"), lambda: make_gym_env("CartPole-v1")):
        sampler = SerialSampler(env_fn, batch_T=8, batch_B=2, max_decorrelation_steps=0)
        sampler.initialize(CategoricalPgAgent(), seed=0)
        samples, _ = sampler.obtain_samples(0)
        rewards.append(samples["next", "reward"].clone())
        sampler.shutdown()
    torch.testing.assert_close(rewards[0], rewards[1])


def test_env_kwargs_that_do_not_fit_env_fn_are_refused_at_construction():
    with pytest.raises(ValueError, match=r"env_kwargs=\{\} does not fit env_fn make_gym_env.*'id'"):
        SerialSampler(batch_T=2, batch_B=2)
    with pytest.raises(ValueError, match=r"eval_env_kwargs.*CountingEnv.*unexpected"):
        SerialSampler(
            CountingEnv, {}, batch_T=2, batch_B=2, eval_env_kwargs={"nope": 1}, eval_n_envs=1,
            eval_max_steps=10,
        )  # fmt: skip
    with pytest.raises(ValueError, match="traj_info_cls must be TrajInfo"):
        SerialSampler(CountingEnv, {}, batch_T=2, batch_B=2, traj_info_cls=dict)


def test_space_to_spec():
    box = space_to_spec(gym.spaces.Box(-2.0, 3.0, (4,), np.float64))
    assert box.dtype == torch.float32 and box.shape == (4,)
    assert float(box.space.low[0]) == -2.0 and float(box.space.high[0]) == 3.0
    disc = space_to_spec(gym.spaces.Discrete(5))
    assert disc.space.n == 5 and disc.dtype == torch.int64 and disc.shape == ()
    nested = space_to_spec(DictObsEnv.observation_space)
    assert set(nested.keys()) == {"image", "joints"}
    assert nested["image"].dtype == torch.uint8
    with pytest.raises(TypeError, match="Tuple"):
        space_to_spec(gym.spaces.Tuple((gym.spaces.Discrete(2),)))


def test_traj_tracker_matches_loop():
    rng = np.random.default_rng(0)
    discount = 0.9
    rewards = rng.choice([0.0, 1.0, -2.5], size=(6, 3))
    tracker = TrajTracker(3, TrajInfo, discount)
    for r in rewards:
        tracker.step(r)
    info = tracker.finish(1)
    col = rewards[:, 1]
    assert info.Length == 6
    assert info.Return == pytest.approx(col.sum())
    assert info.NonzeroRewards == int((col != 0).sum())
    assert info.DiscountedReturn == pytest.approx(sum(discount**k * r for k, r in enumerate(col)))
    # Env 1 restarted; env 0 kept counting.
    tracker.step(np.ones(3))
    assert tracker.finish(1).Length == 1
    assert tracker.finish(0).Length == 7
    assert set(info.fields()) == {"Length", "Return", "NonzeroRewards", "DiscountedReturn"}


class _Peak(TrajInfo):
    """Reads every step's info and the last one (both of ``TrajTracker``'s per-env paths)."""

    def __init__(self) -> None:
        super().__init__()
        self.Peak, self.Final = 0.0, 0.0

    def step_info(self, info: dict) -> None:
        self.Peak = max(self.Peak, info["x"])

    def terminate(self, info: dict) -> None:
        self.Final = info.get("x", -1.0)


@pytest.mark.parametrize("cls", [TrajInfo, _Peak])
@pytest.mark.parametrize("n_ended", [2, 5])  # finish_many's loop and its array path
def test_traj_tracker_finish_many_equals_finish_one_by_one(cls, n_ended):
    rng = np.random.default_rng(1)
    one, many = TrajTracker(8, cls, 0.95), TrajTracker(8, cls, 0.95)
    for step in range(12):
        reward = rng.normal(size=8).round(1)
        for tracker in (one, many):
            tracker.step(reward)
            if tracker.needs_info:
                for b in range(8):
                    tracker.step_info(b, {"x": float(reward[b])})
        ended = sorted(rng.choice(8, size=n_ended, replace=False).tolist())
        infos = [{"x": float(step)} if b % 2 else {} for b in ended]
        expected = [one.finish(b, info) for b, info in zip(ended, infos, strict=True)]
        got = many.finish_many(ended, infos)
        assert [r.fields() for r in got] == [r.fields() for r in expected]
        assert all(type(r) is cls for r in got)
    for b in range(8):  # the trackers carry on alike
        assert one.finish(b).fields() == many.finish(b).fields()


def test_traj_tracker_rejects_non_trajinfo():
    with pytest.raises(TypeError, match="traj_info_cls"):
        TrajTracker(2, dict)
