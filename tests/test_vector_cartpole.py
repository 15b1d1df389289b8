"""VectorCartPole: TorchRL's env contract, gymnasium's CartPole-v1 dynamics step for step,
time limits, partial resets, seeding and argument checks.

Gymnasium is the reference: each of the N carts is shadowed by a ``CartPole-v1`` started from
the same state and driven by the same actions; observations, rewards, terminations and
truncations must agree at every step, across terminations, truncations and the partial
resets that ``step_and_maybe_reset`` makes.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from tdrl.envs import VectorCartPole
from tdrl.envs.vector_cartpole import cartpole_step
from tdrl.utils.checks import ArgumentError

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]


@pytest.mark.parametrize("num_envs", [1, 5])
@pytest.mark.parametrize("sync_free", [False, True])
def test_specs_pass_torchrl_check_env_specs(num_envs, sync_free):
    env = VectorCartPole(num_envs, seed=0, sync_free=sync_free)
    check_env_specs(env, seed=1)
    assert env.batch_size == torch.Size([num_envs])
    td = env.reset()
    assert td["observation"].shape == (num_envs, 4)
    assert td["observation"].dtype == torch.float32
    assert env.action_spec.shape == (num_envs,)
    assert env.action_spec.space.n == 2
    assert env.full_reward_spec["reward"].shape == (num_envs, 1)
    for key in ("done", "terminated", "truncated"):
        assert env.full_done_spec[key].shape == (num_envs, 1)
        assert env.full_done_spec[key].dtype == torch.bool


def test_one_step_of_the_physics_matches_gymnasium_in_float64():
    """Random states far from the start (near and past the thresholds), both actions."""
    rng = np.random.default_rng(0)
    scale = np.array([2.6, 3.0, 0.25, 3.0])
    states = rng.uniform(-1, 1, size=(300, 4)) * scale
    actions = rng.integers(0, 2, size=300)
    ours, terminated = cartpole_step(torch.from_numpy(states), torch.from_numpy(actions))
    ref = CartPoleEnv()
    ref.reset(seed=0)
    for i in range(len(states)):
        ref.state = states[i].copy()
        ref.steps_beyond_terminated = None
        _, reward, term, _, _ = ref.step(int(actions[i]))
        assert reward == 1.0
        np.testing.assert_allclose(ours[i].numpy(), ref.state, rtol=0, atol=1e-12)
        assert bool(terminated[i]) == term, i
    assert terminated.any() and not terminated.all()


def _gym_shadows(num_envs: int, max_episode_steps: int) -> list[gym.Env]:
    envs = [gym.make("CartPole-v1", max_episode_steps=max_episode_steps) for _ in range(num_envs)]
    for i, env in enumerate(envs):
        env.reset(seed=i)
    return envs


def _start_from(shadow: gym.Env, state: torch.Tensor) -> None:
    """Reset ``shadow`` and put it in ``state`` (our env's state, as float64)."""
    shadow.reset()
    shadow.unwrapped.state = state.double().cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-6)], ids=["float32", "float64"]
)
def test_dynamics_match_gymnasium_step_for_step(device, dtype, atol):
    """150 steps of 8 carts under random actions with a 30-step limit: terminations,
    truncations and the partial resets of ``step_and_maybe_reset`` all happen."""
    n, limit = 8, 30
    env = VectorCartPole(n, seed=3, max_episode_steps=limit, dtype=dtype, device=device)
    shadows = _gym_shadows(n, limit)
    td = env.reset()
    for i in range(n):
        _start_from(shadows[i], env.state[i])
    actions = torch.randint(0, 2, (150, n), generator=torch.Generator().manual_seed(0))
    counts = {"terminated": 0, "truncated": 0}
    for t in range(len(actions)):
        td["action"] = actions[t].to(device)
        transition, td = env.step_and_maybe_reset(td)
        nxt = transition["next"].cpu()
        for i in range(n):
            obs, reward, terminated, truncated, _ = shadows[i].step(int(actions[t, i]))
            where = f"step {t}, env {i}"
            np.testing.assert_allclose(nxt["observation"][i].numpy(), obs, atol=atol, err_msg=where)
            assert nxt["reward"][i, 0].item() == reward, where
            assert nxt["terminated"][i, 0].item() == terminated, where
            assert nxt["truncated"][i, 0].item() == truncated, where
            assert nxt["done"][i, 0].item() == (terminated or truncated), where
            counts["terminated"] += terminated
            counts["truncated"] += truncated
            if terminated or truncated:  # our env reset this cart: start its shadow there
                _start_from(shadows[i], env.state[i])
                assert env.elapsed_steps[i] == 0
                torch.testing.assert_close(td["observation"][i], env.state[i].float())
            else:
                np.testing.assert_allclose(
                    env.state[i].double().cpu().numpy(), shadows[i].unwrapped.state, atol=atol
                )
    assert counts["terminated"] >= 5 and counts["truncated"] >= 1, counts
    assert not td["done"].any()


@pytest.mark.parametrize("sync_free", [False, True])
def test_truncation_at_max_episode_steps(sync_free):
    """No cart can fall within 5 steps of a start in U(-0.05, 0.05): all are truncated at
    step 5 exactly, never terminated, then start again."""
    env = VectorCartPole(16, seed=0, max_episode_steps=5, sync_free=sync_free)
    td = env.reset()
    for t in range(1, 11):
        td["action"] = env.action_spec.rand()
        transition, td = env.step_and_maybe_reset(td)
        nxt = transition["next"]
        assert not nxt["terminated"].any()
        assert bool(nxt["truncated"].all()) == (t % 5 == 0), t
        assert torch.equal(nxt["done"], nxt["truncated"])
        assert torch.equal(env.elapsed_steps, torch.full((16,), t % 5))


@pytest.mark.parametrize("limit", [500, None])
def test_a_balanced_pole_is_truncated_at_the_limit_only(limit):
    """A linear controller keeps every pole up for 600 steps: CartPole-v1's 500-step limit
    truncates all episodes at step 500, and no limit never does."""
    env = VectorCartPole(16, seed=0, max_episode_steps=limit)
    gains = torch.tensor([1.0, 1.0, 10.0, 1.0])
    td = env.reset()
    for t in range(1, 601):
        td["action"] = (td["observation"] @ gains > 0).long()
        transition, td = env.step_and_maybe_reset(td)
        nxt = transition["next"]
        assert not nxt["terminated"].any(), t
        assert nxt["truncated"].all() if t == limit else not nxt["truncated"].any(), t
    assert env.elapsed_steps.eq(100 if limit else 600).all()


@pytest.mark.parametrize("sync_free", [False, True])
def test_partial_reset_resets_only_the_marked_envs(sync_free):
    env = VectorCartPole(6, seed=1, sync_free=sync_free)
    td = env.reset()
    for _ in range(3):
        td["action"] = torch.tensor([0, 1, 0, 1, 1, 0])
        td = env.step(td)["next"].exclude("reward")
    before, steps_before = env.state, env.elapsed_steps
    mask = torch.tensor([True, False, True, False, False, False])
    td["_reset"] = mask.unsqueeze(-1)
    out = env.reset(td)
    after = env.state
    assert torch.equal(after[~mask], before[~mask])
    assert (after[mask] != before[mask]).all()
    assert after[mask].abs().max() <= 0.05
    assert env.elapsed_steps.tolist() == [0, 3, 0, 3, 3, 3]
    assert steps_before.tolist() == [3] * 6
    torch.testing.assert_close(out["observation"], after)
    assert "_reset" not in out

    # A full reset (no "_reset") draws every cart again.
    env.reset()
    assert (env.state != after).all() and env.elapsed_steps.eq(0).all()


def test_reset_with_set_state_starts_the_marked_envs_from_the_observation():
    env = VectorCartPole(3, seed=0, dtype=torch.float64)
    env.reset()
    start = torch.tensor([[0.1, 0.2, 0.03, -0.4], [0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 0.1, 0.5]])
    env.reset(TensorDict({"observation": start}, [3]), set_state=True)
    torch.testing.assert_close(env.state, start.double())
    keep = env.state
    other = TensorDict({"observation": -start, "_reset": torch.tensor([[False], [True], [False]])})
    env.reset(other.auto_batch_size_(1), set_state=True)
    torch.testing.assert_close(env.state, torch.stack((keep[0], -keep[1], keep[2])))
    with pytest.raises(KeyError, match="needs an 'observation' entry"):
        env.reset(TensorDict({}, [3]), set_state=True)


def test_partial_step_moves_only_the_marked_envs():
    """TorchRL's ``"_step"`` mask: the others keep their state, get no reward, not done."""
    env = VectorCartPole(4, seed=0)
    td = env.reset()
    before = env.state
    td["action"] = torch.ones(4, dtype=torch.int64)
    td["_step"] = torch.tensor([True, False, True, False])
    nxt = env.step(td)["next"]
    assert torch.equal(env.state[1::2], before[1::2])
    assert (env.state[0::2] != before[0::2]).any(-1).all()
    assert nxt["reward"].squeeze(-1).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert env.elapsed_steps.tolist() == [1, 0, 1, 0]
    assert not nxt["done"].any()


@pytest.mark.parametrize("sync_free", [False, True])
def test_the_same_seed_gives_the_same_episodes(sync_free):
    def run(env: VectorCartPole) -> TensorDict:
        torch.manual_seed(123)  # the random policy of the rollout
        return env.rollout(120, break_when_any_done=False)

    first = run(VectorCartPole(8, seed=7, sync_free=sync_free))
    second = run(VectorCartPole(8, seed=7, sync_free=sync_free))
    assert first["next", "done"].sum() >= 20  # many resets were drawn
    assert torch.equal(first["observation"], second["observation"])
    assert torch.equal(first["next", "done"], second["next", "done"])

    reseeded = VectorCartPole(8, seed=99, sync_free=sync_free)
    assert not torch.equal(run(reseeded)["observation"], first["observation"])
    reseeded.set_seed(7)
    assert torch.equal(run(reseeded)["observation"], first["observation"])

    torch.manual_seed(5)  # no seed: drawn from torch's global generator
    a = VectorCartPole(8, sync_free=sync_free).reset()["observation"]
    torch.manual_seed(5)
    b = VectorCartPole(8, sync_free=sync_free).reset()["observation"]
    assert torch.equal(a, b)


def test_rollout_with_a_random_policy():
    env = VectorCartPole(32, seed=0)
    rollout = env.rollout(100, break_when_any_done=False)
    assert rollout.batch_size == (32, 100)
    nxt = rollout["next"]
    assert torch.equal(nxt["reward"], torch.ones(32, 100, 1))
    assert torch.equal(nxt["done"], nxt["terminated"] | nxt["truncated"])
    assert nxt["terminated"].sum() >= 32  # random pushes drop the pole within ~20 steps
    # After a termination the next step starts from a fresh state; otherwise o_{t+1} is
    # the observation the next step starts from.
    done = nxt["done"][:, :-1, 0]
    follow = rollout["observation"][:, 1:]
    assert torch.equal(follow[~done], nxt["observation"][:, :-1][~done])
    assert follow[done].abs().max() <= 0.05
    assert nxt["observation"][:, :-1][done].abs().max() > 0.05
    assert torch.isin(rollout["action"], torch.tensor([0, 1])).all()


def test_handed_out_tensors_never_change():
    env = VectorCartPole(4, seed=0, max_episode_steps=2)
    td = env.reset()
    td["action"] = torch.zeros(4, dtype=torch.int64)
    transition, td = env.step_and_maybe_reset(td)
    kept = transition["next", "observation"].clone()
    seen = transition["next", "observation"]
    for _ in range(4):
        td["action"] = torch.ones(4, dtype=torch.int64)
        _, td = env.step_and_maybe_reset(td)
    assert torch.equal(seen, kept)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_envs": 0}, "num_envs must be a positive int, got 0"),
        ({"num_envs": -3}, "num_envs must be a positive int"),
        ({"num_envs": 2.5}, "num_envs must be a positive int"),
        ({"num_envs": "8"}, "num_envs must be a positive int"),
        ({"num_envs": 2, "device": "gpu0"}, "device must be a device string"),
        ({"num_envs": 2, "device": 3}, "device must be a torch.device or a device string"),
        ({"num_envs": 2, "max_episode_steps": 0}, "max_episode_steps must be a positive int"),
        ({"num_envs": 2, "seed": -1}, "seed must be a non-negative int"),
        ({"num_envs": 2, "dtype": torch.float16}, "dtype must be torch.float32 or torch.float64"),
        ({"num_envs": 2, "sync_free": "yes"}, "sync_free must be True or False"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(kwargs, match):
    num_envs = kwargs.pop("num_envs")
    with pytest.raises(ArgumentError, match=match) as info:
        VectorCartPole(num_envs, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_a_cuda_device_without_cuda_is_refused():
    with pytest.raises(ArgumentError, match="device 'cuda' needs a CUDA device") as info:
        VectorCartPole(2, device="cuda")
    assert "\n" not in str(info.value)


def test_the_physics_is_differentiable_in_the_state():
    state = (torch.rand(6, 4, dtype=torch.float64) - 0.5).requires_grad_()
    action = torch.tensor([0, 1, 1, 0, 1, 0])
    assert torch.autograd.gradcheck(lambda s: cartpole_step(s, action)[0], (state,))


def test_the_benchmark_prints_every_row(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vector_env.py"
    spec = importlib.util.spec_from_file_location("vector_env_benchmark", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        code = bench.main(["--num-envs", "1", "8", "--threads", "1", "--seconds", "0.02"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert code == 0
    for loop in ("physics", "env-private", "torchrl", "gym-loop", "gym-vector", "gym-sync"):
        row = re.search(rf"^\| {loop} \| \S+ \| ([\d.]+[kM]) \| ([\d.]+[kM]) \|$", out, re.M)
        assert row, (loop, out)
    assert re.search(r"^\| 1 \| 8 \| \d+ \| \d+ \| [\d.]+ \|$", out, re.M), out


def test_the_env_stays_on_its_device():
    env = VectorCartPole(2)
    assert env.to("cpu") is env and env.to(torch.device("cpu")) is env
    with pytest.raises(ArgumentError, match="cannot move from cpu to 'meta'") as info:
        env.to("meta")
    assert "\n" not in str(info.value)
