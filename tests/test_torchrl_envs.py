"""TorchRL envs in every sampler: the batch equals stepping the env by hand.

``NestedCountingEnv`` (``tdrl.testing.torchrl_envs``) makes every number of a batch
predictable: a nested ``Composite`` observation, a ``cost`` entry in its reward spec,
episodes of 5 steps. ``NestedFixedAgent`` acts ``(k + env_id) mod 3``, so the same actions
come out of every sampler. The parallel samplers spawn workers (a few seconds each), so each
is started once.
"""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Unbounded
from torchrl.envs import GymEnv, ParallelEnv, RewardScaling, SerialEnv, TransformedEnv
from torchrl.envs.utils import check_env_specs

from tdrl.agents import CategoricalPgAgent, DqnAgent
from tdrl.algos import DQN, PPO
from tdrl.envs import TrajInfo, make_gym_env
from tdrl.runners import MinibatchRl
from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler
from tdrl.samplers.evaluation import EVAL_SEED_OFFSET
from tdrl.testing import CountingEnv
from tdrl.testing.torchrl_envs import NestedCountingEnv, NestedFixedAgent

T, B, SEED = 7, 4, 3


def serial_nested(n: int) -> SerialEnv:
    """``n`` NestedCountingEnvs as one TorchRL env of batch size ``[n]``."""
    return SerialEnv(n, NestedCountingEnv)


def cartpole(reward_scale: float | None = None) -> GymEnv | TransformedEnv:
    env = GymEnv("CartPole-v1", categorical_action_encoding=True)
    return env if reward_scale is None else TransformedEnv(env, RewardScaling(0.0, reward_scale))


def _sampler(cls=SerialSampler, env_fn=NestedCountingEnv, **kwargs):
    kw = {"batch_T": T, "batch_B": B, "max_decorrelation_steps": 0, **kwargs}
    if cls is not SerialSampler:
        kw.setdefault("n_workers", 2 if cls is AlternatingSampler else 1)
    return cls(env_fn, {}, **kw)


def by_hand(batches, envs, columns=1):
    """The batches a sampler should return, stepping ``envs`` with the batches' actions.

    Env ``i`` (``columns`` columns) is seeded ``SEED + i * columns``, reset, then stepped
    with ``step_and_maybe_reset``; returns the expected ``[T, B]`` TensorDicts.
    """
    tds = []
    for i, env in enumerate(envs):
        env.set_seed(SEED + i * columns)
        tds.append(env.reset())
    prev_a = torch.zeros(len(envs) * columns, dtype=torch.long)
    prev_r = torch.zeros(len(envs) * columns, 1)
    expected = []
    next_keys = ["observation", "reward", "done", "terminated", "truncated"]
    if ("next", "cost") in batches[0].keys(True):  # recorded as an extra key
        next_keys.append("cost")
    for batch in batches:
        rows = []
        for t in range(batch.shape[0]):
            row = {"observation": [], "next": []}
            for i, env in enumerate(envs):
                cols = slice(i * columns, (i + 1) * columns)
                action = batch["action"][t, cols]
                td = tds[i]
                row["observation"].append(td["observation"].clone().reshape(columns))
                td.set("action", action.reshape(env.action_spec.shape))
                out, tds[i] = env.step_and_maybe_reset(td)
                row["next"].append(out["next"].reshape(columns))
            nxt = torch.cat(row["next"])
            rows.append(
                TensorDict(
                    {
                        "observation": torch.cat(row["observation"]),
                        "prev_action": prev_a.clone(),
                        "prev_reward": prev_r.clone(),
                        "action": batch["action"][t],
                        "next": nxt.select(*next_keys),
                    },
                    batch_size=[len(envs) * columns],
                )
            )
            done = nxt["done"][:, 0]
            prev_a = torch.where(done, 0, batch["action"][t])
            prev_r = torch.where(done[:, None], 0.0, nxt["reward"])
        expected.append(torch.stack(rows))
    return expected


def assert_batches_equal(got, expected):
    for g, e in zip(got, expected, strict=True):
        for key in e.keys(True, True):
            torch.testing.assert_close(g[key], e[key], msg=f"{key}")


def collect(sampler, agent, n=2):
    sampler.initialize(agent, seed=SEED)
    try:
        out = []
        for itr in range(n):
            agent.sample_mode(itr)
            samples, trajs = sampler.obtain_samples(itr)
            out.append((samples.clone(), sorted(tr.Return for tr in trajs)))
        return out
    finally:
        sampler.shutdown()


def test_test_env_passes_torchrl_spec_checks():
    check_env_specs(NestedCountingEnv(), seed=0)
    check_env_specs(serial_nested(2), seed=0)


@pytest.fixture(scope="module")
def serial_batches():
    return collect(_sampler(extra_keys=["cost"]), NestedFixedAgent())


def test_serial_batch_equals_stepping_by_hand(serial_batches):
    batches = [s for s, _ in serial_batches]
    assert batches[0]["observation"].keys() == {"pos", "vel"}  # nested, as declared
    assert batches[0].names[0] == "time"
    assert_batches_equal(batches, by_hand(batches, [NestedCountingEnv() for _ in range(B)]))
    k, env_id = batches[0]["observation", "pos"][..., 0], batches[0]["observation", "vel"][..., 0]
    assert torch.equal(env_id[0], torch.arange(B) + float(SEED))  # env b seeded SEED + b
    assert torch.equal(batches[0]["action"], (k + env_id).long() % 3)  # the agent's rule
    # Episodes of 5 steps, reward k + 1 + a / 10: the first batch ends one per env.
    assert serial_batches[0][1] == pytest.approx(
        sorted(15 + sum((k + SEED + b) % 3 for k in range(5)) / 10 for b in range(B))
    )


def test_extra_key_is_recorded(serial_batches):
    batch = serial_batches[0][0]
    assert torch.equal(batch["next", "cost"][..., 0], batch["action"].float())


@pytest.mark.parametrize("cls", [GpuSampler, AlternatingSampler])
def test_parallel_samplers_give_the_serial_batches(cls, serial_batches):
    got = collect(_sampler(cls, extra_keys=["cost"]), NestedFixedAgent())
    for (g, g_trajs), (s, s_trajs) in zip(got, serial_batches, strict=True):
        assert_batches_equal([g], [s])
        assert g_trajs == pytest.approx(s_trajs)


def test_batched_env_fills_its_columns():
    sampler = _sampler(env_fn=lambda: serial_nested(2), extra_keys=["cost"])
    batches = [s for s, _ in collect(sampler, NestedFixedAgent())]
    assert_batches_equal(batches, by_hand(batches, [serial_nested(2), serial_nested(2)], 2))


def test_batched_env_in_wait_reset_freezes_finished_columns():
    sampler = _sampler(env_fn=lambda: serial_nested(2), batch_T=7, mid_batch_reset=False)
    (first, _), (second, _) = collect(sampler, NestedFixedAgent())
    valid = torch.tensor([True] * 5 + [False] * 2)
    for batch in (first, second):  # episodes of 5: frozen for 2 steps, reset between batches
        assert torch.equal(batch["valid"], valid[:, None].expand(7, B))
        assert torch.equal(
            batch["observation", "pos"][:5, :, 0], torch.arange(5.0)[:, None].expand(5, B)
        )
        assert not batch["next", "reward"][5:].any() and batch["next", "terminated"][4:].all()


def test_evaluation_runs_torchrl_envs():
    sampler = _sampler(eval_n_envs=2, eval_max_trajectories=2)
    agent = NestedFixedAgent()
    sampler.initialize(agent, seed=SEED)
    try:
        returns = sorted(tr.Return for tr in sampler.evaluate_agent(0))
    finally:
        sampler.shutdown()
    env_ids = [SEED + EVAL_SEED_OFFSET + i for i in range(2)]
    expected = sorted(15 + sum((k + e) % 3 for k in range(5)) / 10 for e in env_ids)
    assert returns == pytest.approx(expected)


class CostTrajInfo(TrajInfo):
    """Sums the env's ``cost`` entry; keeps the final ``pos[0]``."""

    def __init__(self):
        super().__init__()
        self.Cost, self.FinalK = 0.0, -1.0

    def step_info(self, info):
        self.Cost += float(info["cost"])

    def terminate(self, info):
        self.FinalK = float(info["observation"]["pos"][0])


@pytest.mark.parametrize("env_fn", [NestedCountingEnv, lambda: serial_nested(2)])
def test_traj_info_reads_the_step_of_its_env(env_fn):
    sampler = _sampler(env_fn=env_fn, traj_info_cls=CostTrajInfo)
    sampler.initialize(NestedFixedAgent(), seed=SEED)
    samples, trajs = sampler.obtain_samples(0)
    sampler.shutdown()
    assert len(trajs) == B and all(tr.FinalK == 5.0 for tr in trajs)
    costs = samples["action"][:5].sum(0).float()  # the episodes' actions (the cost is the action)
    assert sorted(tr.Cost for tr in trajs) == sorted(costs.tolist())


def test_transforms_are_honoured():
    sampler = SerialSampler(lambda: cartpole(10.0), {}, batch_T=40, batch_B=2)
    sampler.initialize(CategoricalPgAgent(), seed=0)
    try:
        samples, trajs = sampler.obtain_samples(0)
    finally:
        sampler.shutdown()
    assert torch.equal(samples["next", "reward"], torch.full((40, 2, 1), 10.0))
    assert trajs and all(tr.Return == 10.0 * tr.Length for tr in trajs)


def test_gymenv_gives_the_gymnasium_layout():
    """The TorchRL path (a transform on the GymEnv) stores what the gymnasium loop stores."""
    layouts = []
    for env_fn, kwargs in (
        (cartpole, {"reward_scale": 1.0}),
        (make_gym_env, {"id": "CartPole-v1"}),
    ):
        sampler = SerialSampler(env_fn, kwargs, batch_T=4, batch_B=2)
        samples = sampler.initialize(CategoricalPgAgent(), seed=0)
        sampler.shutdown()
        layouts.append({k: (v.shape, v.dtype) for k, v in samples.items(True, True)})
    assert layouts[0] == layouts[1]


def test_a_bare_gymenv_takes_the_gymnasium_loop_with_the_same_data():
    """A GymEnv with no transform of its own is unwrapped (the path is chosen automatically)
    to the gymnasium loop; an identity transform keeps it on the TorchRL path, same layout."""
    batches, kinds = [], []
    for env_fn in (cartpole, lambda: cartpole(1.0)):
        sampler = SerialSampler(env_fn, {}, batch_T=30, batch_B=2, max_decorrelation_steps=0)
        agent = CategoricalPgAgent()
        torch.manual_seed(0)
        sampler.initialize(agent, seed=3)
        torch.manual_seed(1)
        batches.append(sampler.obtain_samples(0)[0].clone())
        kinds.append({isinstance(env, gym.Env) for env in sampler.envs})
        sampler.shutdown()
    assert kinds == [{True}, {False}]  # the fast loop's gymnasium envs, then TorchRL's
    fast, torchrl_path = batches  # (the two paths seed their envs differently)
    layouts = [{k: (v.shape, v.dtype) for k, v in b.items(True, True)} for b in batches]
    assert layouts[0] == layouts[1]
    assert (fast["next", "reward"] == 1).all() and (torchrl_path["next", "reward"] == 1).all()


def _unbounded_actions():
    env = NestedCountingEnv()
    env.action_spec = Unbounded(shape=(1,))
    return env


def _scaled_one_hot():
    """A GymEnv with one-hot actions behind a transform: the TorchRL path, which refuses it
    (a bare GymEnv is unwrapped to the gymnasium loop, which takes it)."""
    return TransformedEnv(GymEnv("CartPole-v1"), RewardScaling(0.0, 1.0))


def _no_reward():
    env = NestedCountingEnv()
    env.full_reward_spec = env.full_reward_spec.empty()
    return env


@pytest.mark.parametrize(
    ("env_fn", "kwargs", "words"),
    [
        (_scaled_one_hot, {}, ["'action'", "OneHot", "categorical_action_enc"]),
        (_unbounded_actions, {}, ["'action'", "Unbounded", "Bounded"]),
        (_no_reward, {}, ["no reward key", "'reward'"]),
        (NestedCountingEnv, {"extra_keys": ["ok"]}, ["'ok'", "('observation', 'pos')", "'cost'"]),
        (lambda: serial_nested(4), {"batch_B": 6}, ["batch_B=6", "[4]"]),
        (lambda: serial_nested(4), {"eval_n_envs": 2, "eval_max_steps": 4}, ["eval_n_envs=2"]),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_in_one_line(env_fn, kwargs, words):
    kwargs = {"batch_T": 2, "batch_B": 4, **kwargs}
    sampler = SerialSampler(
        env_fn, {k: kwargs.pop(k) for k in ("env_name",) if k in kwargs}, **kwargs
    )
    with pytest.raises((TypeError, ValueError)) as info:
        sampler.initialize(NestedFixedAgent(), seed=0)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message


def test_parallel_samplers_keep_batched_envs_whole_in_their_workers():
    """Refused when ``initialize`` reads the specs, before any worker starts."""
    two_envs = CpuSampler(lambda: serial_nested(2), {}, batch_T=2, batch_B=2, n_workers=2)
    with pytest.raises(ValueError, match=r"n_workers=2 exceeds the 1 batched env\(s\)"):
        two_envs.initialize(NestedFixedAgent(), seed=0)
    processes = GpuSampler(lambda: ParallelEnv(2, NestedCountingEnv), {}, batch_T=2, batch_B=2)
    with pytest.raises(TypeError, match="cannot start a ParallelEnv's processes"):
        processes.initialize(NestedFixedAgent(), seed=0)
    assert not two_envs.worker_processes and not processes.worker_processes


def test_extra_keys_argument_is_checked():
    with pytest.raises(ValueError, match=r"extra_keys.*'reward'.*recorded by every sampler"):
        SerialSampler(NestedCountingEnv, {}, batch_T=2, batch_B=2, extra_keys=["reward"])
    with pytest.raises(ValueError, match="extra_keys must be a sequence"):
        SerialSampler(NestedCountingEnv, {}, batch_T=2, batch_B=2, extra_keys="cost")


def test_gymnasium_info_extra_key():
    sampler = SerialSampler(CountingEnv, {}, batch_T=6, batch_B=2, extra_keys=["k"])
    sampler.initialize(CategoricalPgAgent(), seed=0)
    samples, _ = sampler.obtain_samples(0)
    k = samples["next", "k"]
    assert k.dtype == torch.float32 and k.shape == (6, 2, 1)
    next_k = samples["next", "observation"][..., :1]  # [k, episode, env_id]; 0 after a reset
    ended = samples["next", "done"]
    assert torch.equal(torch.where(ended, 5.0, next_k), k)  # info k repeats the final k
    sampler.shutdown()
    missing = SerialSampler(CountingEnv, {}, batch_T=2, batch_B=1, extra_keys=["cost"])
    missing.initialize(CategoricalPgAgent(), seed=0)
    with pytest.raises(KeyError, match=r"no 'cost'.*'k'"):
        missing.obtain_samples(0)
    missing.shutdown()


def test_serial_sampler_iterates_like_a_collector():
    sampler = _sampler()
    agent = NestedFixedAgent()
    sampler.initialize(agent, seed=SEED)
    seen, ended = [], []
    for itr, samples in enumerate(sampler):
        assert samples is sampler.samples and agent.mode == "sample"
        seen.append(samples.clone())
        ended.append(len(sampler.last_traj_infos))
        if itr == 2:
            break
    sampler.update_policy_weights_()  # the agent acts here: nothing to do
    sampler.shutdown()
    assert ended == [B, B, 2 * B]  # episodes of 5 steps end at steps 4, 9, 14 and 19
    assert_batches_equal(seen, by_hand(seen, [NestedCountingEnv() for _ in range(B)]))


def test_cpu_sampler_iterates_gives_the_serial_batches_and_takes_new_weights(serial_batches):
    sampler = _sampler(CpuSampler, extra_keys=["cost"])
    agent = NestedFixedAgent()
    sampler.initialize(agent, seed=SEED)
    got = []
    try:
        for itr, samples in enumerate(sampler):
            got.append((samples.clone(), sorted(tr.Return for tr in sampler.last_traj_infos)))
            if itr == 1:
                break
        agent.model.offset.data.fill_(1.0)
        sampler.update_policy_weights_()
        third = next(iter(sampler))  # a new iterator starts again at itr 0
    finally:
        sampler.shutdown()
    for (g, g_trajs), (s, s_trajs) in zip(got, serial_batches, strict=True):
        assert_batches_equal([g], [s])
        assert g_trajs == pytest.approx(s_trajs)
    k, env_id = third["observation", "pos"][..., 0], third["observation", "vel"][..., 0]
    assert torch.equal(third["action"], (k + env_id + 1).long() % 3)  # the new weights


class NestedModel(nn.Module):
    """``(logits, value)`` from the nested observation: ``pos`` and ``vel`` concatenated."""

    def __init__(self, n_actions: int = 3):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, n_actions + 1))

    def forward(self, observation, prev_action, prev_reward):
        x = torch.cat([observation["pos"], observation["vel"] / 100.0], dim=-1)
        out = self.body(x)
        return out[..., :-1], out[..., -1]


def test_ppo_trains_on_a_nested_torchrl_env():
    sampler = _sampler(batch_T=8, batch_B=2, extra_keys=["cost"])
    agent = CategoricalPgAgent(model=NestedModel())
    before = [p.clone() for p in agent.parameters()]
    runner = MinibatchRl(
        PPO(minibatches=2, epochs=2), agent, sampler, n_steps=4 * 16, log_interval_steps=32,
        progress_bar=False, seed=0,
    )  # fmt: skip
    row = runner.train()
    assert math.isfinite(row["lossAverage"]) and row["Diagnostics/CumSteps"] == 64
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.parameters(), strict=True))


def test_replay_algorithm_takes_batches_with_extra_keys():
    """The n-step replay stores what it needs and drops ``("next", "k")``."""
    sampler = SerialSampler(CountingEnv, {}, batch_T=8, batch_B=2, extra_keys=["k"])
    algo = DQN(batch_size=8, min_steps_learn=16, replay_size=64, eps_steps=32)
    runner = MinibatchRl(
        algo, DqnAgent(), sampler, n_steps=48, log_interval_steps=16, progress_bar=False, seed=0
    )
    row = runner.train()
    assert algo.update_counter > 0 and math.isfinite(row["lossAverage"])


def test_pearls_episode_sampler_refuses_an_env_without_tasks_in_one_line():
    from tdrl.samplers.episodes import EpisodeSampler

    sampler = EpisodeSampler(NestedCountingEnv, {})
    with pytest.raises(TypeError, match=r"EpisodeSampler .* without set_task") as info:
        sampler.initialize(seed=0)
    assert "\n" not in str(info.value)


def test_wait_reset_batched_env_with_unequal_episodes_steps_every_live_column():
    """Columns that end at different steps: the partial-step mask of one step must not
    freeze the same columns at the next (TorchRL returns the mask in the env's output)."""
    from functools import partial

    def two_lengths():
        return SerialEnv(2, [partial(NestedCountingEnv, 3), partial(NestedCountingEnv, 5)])

    sampler = SerialSampler(
        two_lengths, {}, batch_T=7, batch_B=2, max_decorrelation_steps=0, mid_batch_reset=False
    )
    agent = NestedFixedAgent()
    sampler.initialize(agent, seed=3)
    for itr in range(3):
        agent.sample_mode(itr)
        samples, trajs = sampler.obtain_samples(itr)
        assert sorted(t.Length for t in trajs) == [3, 5], itr
        valid = samples["valid"]
        k, next_k = (
            samples["observation", "pos"][..., 0],
            samples["next", "observation", "pos"][..., 0],
        )
        ended = samples["next", "done"].squeeze(-1)
        stepped = valid & ~ended  # every live step advances the counter by one
        assert torch.equal(next_k[stepped], k[stepped] + 1), itr
        assert all(td.get("_step", None) is None for td in sampler._runner.carried)
    sampler.shutdown()
