"""MetaRl (PEARL's loop): the collection schedule, the samples it writes, the evaluation
columns, determinism under a seed and the argument checks."""

from __future__ import annotations

import csv
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from tdrl.agents.qpg import PearlAgent
from tdrl.algos.qpg import PEARL
from tdrl.logging import load_snapshot, logger_context
from tdrl.logging.files import SnapshotError
from tdrl.replays import MultiTaskReplay
from tdrl.replays.n_step import ReplayBuffer
from tdrl.runners.meta_rl import MetaRl
from tdrl.utils.checks import ArgumentError

SMALL = {
    "n_train_tasks": 3,
    "n_eval_tasks": 2,
    "n_iterations": 2,
    "num_initial_steps": 40,
    "num_tasks_sample": 2,
    "num_steps_prior": 20,
    "num_steps_posterior": 40,
    "num_extra_rl_steps_posterior": 40,
    "num_train_steps_per_itr": 3,
    "num_steps_per_eval": 60,
    "num_exp_traj_eval": 1,
    "replay_size": 1000,
}


def make_runner(*, agent=None, algo=None, **kwargs) -> MetaRl:
    torch.set_num_threads(1)
    agent = agent or PearlAgent(latent_size=3, hidden_sizes=(16,), encoder_hidden_sizes=(16,))
    algo = algo or PEARL(meta_batch=2, batch_size=8, embedding_batch_size=8, reward_scale=100.0)
    return MetaRl(algo, agent, **{"env_name": "point-robot", **SMALL, **kwargs})


def test_collection_schedule_buffers_and_samples(monkeypatch):
    runner = make_runner()
    events: list[tuple] = []
    collect = runner.collect

    def spy_collect(task, n_steps, *, posterior, to_encoder):
        events.append(("collect", task, n_steps, posterior, to_encoder))
        steps = collect(task, n_steps, posterior=posterior, to_encoder=to_encoder)
        events.append(("collected", steps))
        return steps

    clear, append = MultiTaskReplay.clear_encoder, MultiTaskReplay.append_samples
    infer, log_row = runner.agent.infer_posterior, runner.log_row
    appended, rows = [], []

    def spy_clear(self, task):
        events.append(("clear", task))
        return clear(self, task)

    def spy_append(self, task, samples, *, to_encoder, context=None):
        appended.append(samples.clone())
        return append(self, task, samples, to_encoder=to_encoder, context=context)

    def spy_infer(context):
        events.append(("infer",))
        return infer(context)

    def spy_log_row(itr, infos, evals):
        rows.append(log_row(itr, infos, evals))
        return rows[-1]

    monkeypatch.setattr(runner, "collect", spy_collect)
    monkeypatch.setattr(runner, "log_row", spy_log_row)
    monkeypatch.setattr(runner.agent, "infer_posterior", spy_infer)
    monkeypatch.setattr(MultiTaskReplay, "clear_encoder", spy_clear)
    monkeypatch.setattr(MultiTaskReplay, "append_samples", spy_append)
    runner.train()

    # Drop the evaluation's posteriors (after the last collection of each iteration).
    sched = [e for e in events if e[0] != "collected"]
    initial = [("collect", t, 40, False, True) for t in range(3)]
    assert sched[:3] == initial
    blocks, i = [], 3
    while i < len(sched):
        if sched[i][0] != "clear":
            i += 1  # an evaluation posterior
            continue
        t = sched[i][1]
        assert sched[i + 1] == ("collect", t, 20, False, True)  # prior: no posterior
        assert sched[i + 2] == ("collect", t, 40, True, True)
        assert sched[i + 3] == ("infer",)  # after 1 of its 2 trajectories
        assert sched[i + 4] == ("collect", t, 40, True, False)
        assert sched[i + 5] == ("infer",)
        blocks.append(t)
        i += 6
    assert len(blocks) == 2 * 2  # num_tasks_sample per iteration
    steps = [e[1] for e in events if e[0] == "collected"]
    assert steps == [40] * 3 + [20, 40, 40] * 4  # whole 20-step trajectories
    assert [r["Diagnostics/CumSteps"] for r in rows] == [120 + 200, 120 + 400]
    assert rows[-1]["Diagnostics/CumUpdates"] == 6

    # Buffers: RL receives everything; the encoder what came after the task's last clear,
    # prior and posterior phases only.
    for task in range(3):
        calls = [e for e in sched if e[0] in ("collect", "clear") and e[1] == task]
        rl = sum(e[2] for e in calls if e[0] == "collect")
        last_clear = max((k for k, e in enumerate(calls) if e[0] == "clear"), default=-1)
        enc = sum(e[2] for e in calls[last_clear + 1 :] if e[0] == "collect" and e[4])
        assert runner.replay.task_len(task) == rl
        assert runner.replay.encoder_len(task) == enc

    # Every trajectory is a [20, 1] batch with tdrl's prev_action / prev_reward convention.
    for td in appended:
        assert tuple(td.batch_size) == (20, 1)
        assert torch.all(td["prev_action"][0] == 0) and torch.all(td["prev_reward"][0] == 0)
        assert torch.equal(td["prev_action"][1:], td["action"][:-1])
        assert torch.equal(td["prev_reward"][1:], td["next", "reward"][:-1])
        assert torch.equal(td["observation"][1:], td["next", "observation"][:-1])
        assert td["next", "truncated"][-1].all() and not td["next", "truncated"][:-1].any()
        assert not td["next", "terminated"].any()
        assert torch.equal(td["next", "done"], td["next", "truncated"])


def test_eval_columns_present_and_finite():
    row = make_runner(n_iterations=1, num_evals=2).train()
    for key in (
        "AverageTrainReturn_all_train_tasks",
        "AverageReturn_all_train_tasks",
        "AverageReturn_all_test_tasks",
        "AverageReturn_rollout_0",
        "AverageReturn_rollout_2",
        "ReturnAverage",
        "lossAverage",
        "loss_klAverage",
        "Diagnostics/Iteration",
    ):
        assert math.isfinite(row[key]), key
    assert "AverageReturn_rollout_3" not in row  # 60 eval steps = 3 trajectories of 20
    assert row["ReturnAverage"] == row["AverageReturn_all_test_tasks"]
    assert row["AverageReturn_all_test_tasks"] < 0  # point-robot's reward is -distance


def test_sparse_rewards_reported_and_seen_by_encoder():
    runner = make_runner(n_iterations=1, sparse_rewards=True, env_name="sparse-point-robot")
    row = runner.train()
    assert 0.0 <= row["AverageReturn_all_test_tasks"] <= 20.0
    context = runner.replay.sample_context([0], 16)
    rl = runner.replay.sample_batch([0], 16)
    assert torch.all(context["next", "reward"] >= 0)  # sparse: 0 or 1 - d
    assert torch.all(rl["next", "reward"] <= 0)  # dense: -distance


def test_same_seed_same_rows():
    def run(seed):
        row = make_runner(n_iterations=1, seed=seed).train()
        return {k: v for k, v in row.items() if "Time" not in k}

    first = run(3)
    assert first == run(3)
    assert first != run(4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n_train_tasks": 0}, "n_train_tasks"),
        ({"n_eval_tasks": 0}, "n_eval_tasks"),
        ({"n_iterations": 1.5}, "n_iterations"),
        ({"num_initial_steps": 0}, "num_initial_steps"),
        ({"update_post_train": 0}, "update_post_train"),
        ({"num_exp_traj_eval": 0}, "num_exp_traj_eval"),
        ({"num_steps_per_eval": 0}, "num_steps_per_eval"),
        ({"env_name": "no-such-env"}, "env_name"),
        ({"device": "gpu"}, "device"),
        ({"num_steps_prior": 0, "num_steps_posterior": 0}, "num_extra_rl_steps_posterior"),
        (
            {"num_steps_prior": 0, "num_steps_posterior": 0, "num_extra_rl_steps_posterior": 0},
            "num_tasks_sample",
        ),
        ({"sparse_rewards": True}, "sparse_rewards"),  # point-robot reports no sparse reward
        ({"env_kwargs": "abc"}, "env_kwargs"),
        ({"seed": 2**70}, "seed"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ArgumentError, match=rf"^{name} "):
        make_runner(**kwargs)


def test_meta_batch_sizes_are_the_algorithms():
    """MetaRl reads meta_batch, batch_size and embedding_batch_size from PEARL (one owner)."""
    with pytest.raises(TypeError, match="meta_batch"):
        make_runner(meta_batch=2)
    runner = make_runner(n_iterations=1)
    calls = []
    sample = MultiTaskReplay.sample_meta_batch

    def spy(self, tasks, batch_size, context_size, *, device=None):
        calls.append((len(tasks), batch_size, context_size))
        batch = sample(self, tasks, batch_size, context_size, device=device)
        assert batch.batch_size == (len(tasks),)
        assert batch["rl"].shape == (len(tasks), batch_size)
        assert batch["context"].shape == (len(tasks), context_size)
        return batch

    with pytest.MonkeyPatch.context() as m:
        m.setattr(MultiTaskReplay, "sample_meta_batch", spy)
        runner.train()
    assert calls == [(2, 8, 8)] * SMALL["num_train_steps_per_itr"]


def test_collection_goes_through_the_shared_env_loop(monkeypatch):
    """Every env step of the collection and the evaluation is EnvRunner.step_envs'; the
    runner's module steps and resets no env itself."""
    import ast
    import inspect

    import tdrl.runners.meta_rl as meta_rl
    from tdrl.samplers.env_loop import EnvRunner

    calls = ast.walk(ast.parse(inspect.getsource(meta_rl)))
    names = {getattr(n.func, "attr", "") for n in calls if isinstance(n, ast.Call)}
    assert not names & {"step", "reset", "rollout"}, names & {"step", "reset", "rollout"}
    steps = []
    step_envs = EnvRunner.step_envs

    def spy(self, t):
        steps.append(t)
        return step_envs(self, t)

    monkeypatch.setattr(EnvRunner, "step_envs", spy)
    runner = make_runner(n_iterations=1, num_evals=1)
    row = runner.train()
    # training steps, then evaluation: (a) 2 tasks x 3 trajectories, (b) and (c) 2 x 60 each.
    assert len(steps) == row["Diagnostics/CumSteps"] + 2 * 60 + 2 * 60 + 2 * 60


def test_bad_algo_or_agent():
    agent = PearlAgent()
    with pytest.raises(ArgumentError, match=r"^algo "):
        MetaRl(object(), agent, env_name="point-robot")  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match=r"^agent "):
        MetaRl(PEARL(), object(), env_name="point-robot")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- snapshots, resume
def _rows(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _run(log_dir, n_iterations, **kwargs) -> None:
    with logger_context(log_dir, 0, "meta", {}, echo=False, resume="resume_from" in kwargs):
        make_runner(n_iterations=n_iterations, seed=3, **kwargs).train()


def test_resume_with_replay_continues_exactly_as_an_uninterrupted_run(tmp_path):
    """2 iterations, then a resume to 4 = 4 iterations straight: same rows (except times)."""
    _run(tmp_path / "straight", 4)
    _run(tmp_path / "cut", 2, snapshot_replay=True)
    snap = load_snapshot(tmp_path / "cut" / "run_0")
    assert snap["itr"] == 1 and snap["replay_itr"] == 1
    assert snap["tasks"]["train_tasks"] and len(snap["tasks"]["eval_tasks"]) == 2
    _run(tmp_path / "cut", 4, snapshot_replay=True, resume_from=tmp_path / "cut" / "run_0")
    straight = _rows(tmp_path / "straight" / "run_0" / "progress.csv")
    cut = _rows(tmp_path / "cut" / "run_0" / "progress.csv")
    assert [r["Diagnostics/Iteration"] for r in cut] == ["0", "1", "2", "3"]  # none lost or twice
    for a, b in zip(straight, cut, strict=True):
        assert {k: v for k, v in a.items() if "Time" not in k} == {
            k: v for k, v in b.items() if "Time" not in k
        }


def test_resume_without_replay_recollects_the_initial_steps(tmp_path, monkeypatch):
    _run(tmp_path, 2)
    assert load_snapshot(tmp_path / "run_0")["replay_itr"] is None
    runner = make_runner(n_iterations=3, seed=3, resume_from=tmp_path / "run_0")
    calls = []
    collect = runner.collect

    def spy(task, n_steps, *, posterior, to_encoder):
        calls.append((task, n_steps, posterior))
        return collect(task, n_steps, posterior=posterior, to_encoder=to_encoder)

    monkeypatch.setattr(runner, "collect", spy)
    with logger_context(tmp_path, 0, "meta", {}, echo=False, resume=True):
        runner.train()
    assert calls[:3] == [(t, SMALL["num_initial_steps"], False) for t in range(3)]
    assert runner.agent.sample_z(*runner.agent.prior_z(1)).shape == (1, 3)
    rows = _rows(tmp_path / "run_0" / "progress.csv")
    assert [r["Diagnostics/Iteration"] for r in rows] == ["0", "1", "2"]
    assert int(float(rows[2]["Diagnostics/CumUpdates"])) == 3 * SMALL["num_train_steps_per_itr"]


def test_resume_refuses_another_run_or_a_finished_one(tmp_path):
    _run(tmp_path, 2)
    run_dir = tmp_path / "run_0"
    with pytest.raises(SnapshotError, match="env_kwargs"):  # another seed: other tasks
        make_runner(n_iterations=3, seed=4, resume_from=run_dir).train()
    with pytest.raises(SnapshotError, match="finished"):
        make_runner(n_iterations=2, seed=3, resume_from=run_dir).train()
    with pytest.raises(FileNotFoundError):
        make_runner(n_iterations=3, seed=3, resume_from=tmp_path / "nothing").train()
    with pytest.raises(ArgumentError, match="resume_from"):
        make_runner(resume_from=3)


def test_multi_task_replay_saves_completely_or_not_at_all(tmp_path, monkeypatch):
    runner = make_runner()
    runner.startup()
    for task in range(3):
        runner.collect(task, 10, posterior=False, to_encoder=task != 1)
    replay = runner.replay
    replay.save(tmp_path / "r", info={"itr": 7})
    assert replay.saved_versions(tmp_path / "r") == [tmp_path / "r"]
    assert replay.saved_info(tmp_path / "r") == {"itr": 7}
    other = MultiTaskReplay(3, size=1000, batch_B=1, encoder_size=replay.encoder_size, seed=0)
    assert other.load(tmp_path / "r") == {"itr": 7}
    assert len(other) == len(replay) and other.encoder_len(1) == 0 < other.encoder_len(0)
    a, b = replay.sample_batch([0, 2], 5), other.sample_batch([0, 2], 5)
    assert a.shape == b.shape == (2, 5)
    # A save that fails part-way (the 4th buffer) leaves the previous save complete.
    runner.collect(0, 10, posterior=False, to_encoder=True)
    save, calls = ReplayBuffer.save, []

    def failing(self, path, **kwargs):
        calls.append(path)
        if len(calls) == 4:
            raise OSError("disk full")
        return save(self, path, **kwargs)

    monkeypatch.setattr(ReplayBuffer, "save", failing)
    with pytest.raises(OSError, match="disk full"):
        replay.save(tmp_path / "r", info={"itr": 8})
    monkeypatch.undo()
    assert replay.saved_versions(tmp_path / "r") == [tmp_path / "r"]
    assert replay.saved_info(tmp_path / "r") == {"itr": 7}
    # A corrupt task refuses the load, naming the file, and changes nothing.
    (tmp_path / "r" / "task_2" / "rl" / "replay_state.pt").write_bytes(b"junk")
    fresh = MultiTaskReplay(3, size=1000, batch_B=1, encoder_size=replay.encoder_size, seed=0)
    with pytest.raises(SnapshotError, match="task_2"):
        fresh.load(tmp_path / "r")
    assert len(fresh) == 0
    # Without the marker (written last) a directory is not a save.
    (tmp_path / "r" / "multi_task_replay.pt").unlink()
    assert replay.saved_versions(tmp_path / "r") == []
    with pytest.raises(FileNotFoundError):
        other.load(tmp_path / "r")
    with pytest.raises(SnapshotError, match="tasks"):
        replay.save(tmp_path / "s")
        MultiTaskReplay(2, size=1000, batch_B=1, encoder_size=replay.encoder_size).load(
            tmp_path / "s"
        )


def test_replay_smaller_than_a_trajectory_is_refused_naming_it():
    with pytest.raises(ArgumentError, match="replay_size"):
        make_runner(replay_size=5).train()  # 20-step point-robot trajectories


def test_resume_refuses_other_settings_naming_them(tmp_path):
    _run(tmp_path, 2)
    run_dir = tmp_path / "run_0"
    changes = [
        (
            {
                "agent": PearlAgent(
                    latent_size=3, hidden_sizes=(16,), encoder_hidden_sizes=(16,), use_context=False
                )
            },
            "agent.use_context",
        ),
        (
            {"algo": PEARL(meta_batch=2, batch_size=8, embedding_batch_size=8, reward_scale=5.0)},
            "algo.reward_scale",
        ),
        ({"num_train_steps_per_itr": 4}, "runner.num_train_steps_per_itr"),
    ]
    for kwargs, name in changes:
        with pytest.raises(SnapshotError, match=name):
            make_runner(n_iterations=3, seed=3, resume_from=run_dir, **kwargs).train()


# ---------------------------------------------------------------------- the episode sampler
def _sampler_and_agent(env_name="point-robot", **kwargs):
    from tdrl.samplers.episodes import EpisodeSampler

    torch.manual_seed(0)
    env = {"name": env_name, "max_episode_steps": 5}
    sampler = EpisodeSampler(env_kwargs=env, env_rank=1, **kwargs)
    sampler.initialize(seed=7)
    agent = PearlAgent(latent_size=2, hidden_sizes=(8,), encoder_hidden_sizes=(8,))
    agent.initialize(sampler.observation_spec, sampler.action_spec)
    agent.eval_mode(0)  # tanh(mean): deterministic given z
    agent.set_z(torch.tensor([[0.3, -0.2]]))
    return sampler, agent


def test_episode_sampler_returns_the_transitions_of_stepping_the_env_by_hand():
    import numpy as np

    from tdrl.envs import make_meta_env

    sampler, agent = _sampler_and_agent()
    task = sampler.env.sample_tasks(1, seed=1)[0]
    sampler.set_task(task)
    episodes = [sampler.episode(agent) for _ in range(2)]

    env = make_meta_env("point-robot", max_episode_steps=5)
    env.set_task(task)
    env.reset(seed=7 + 1)  # the sampler's seeding reset (seed + env_rank), then one per episode
    for episode in episodes:
        obs, _ = env.reset()
        prev_action, prev_reward = torch.zeros(1, 2), torch.zeros(1, 1)
        rows = []
        for _ in range(10):
            o = torch.as_tensor(np.asarray(obs)).reshape(1, 2)
            action, _ = agent.step(o, prev_action, prev_reward)
            obs, reward, term, trunc, _ = env.step(action[0].numpy())
            rows.append((o, prev_action, prev_reward, action, obs, reward, term, trunc))
            prev_action, prev_reward = action, torch.tensor([[reward]], dtype=torch.float32)
            if term or trunc:
                break
        td = episode.samples
        assert tuple(td.batch_size) == (len(rows), 1) == (5, 1) and episode.length == 5
        for t, (o, pa, pr, a, o2, r, term, trunc) in enumerate(rows):
            assert torch.equal(td["observation"][t], o)
            assert torch.equal(td["prev_action"][t], pa)
            assert torch.equal(td["prev_reward"][t], pr)
            assert torch.equal(td["action"][t], a)
            assert torch.equal(td["next", "observation"][t, 0], torch.as_tensor(o2))
            assert td["next", "reward"][t, 0, 0] == torch.tensor(r, dtype=torch.float32)
            assert bool(td["next", "terminated"][t]) == term
            assert bool(td["next", "truncated"][t]) == trunc == (t == 4)
        rewards = torch.tensor([row[5] for row in rows], dtype=torch.float32)
        assert episode.ret == float(rewards.sum()) and episode.context is episode.samples
        assert episode.traj_info.Length == 5


def test_episode_sampler_collects_whole_episodes_and_gives_the_encoder_sparse_rewards():
    sampler, agent = _sampler_and_agent("sparse-point-robot", sparse_rewards=True)
    seen = []

    def after(episodes, more):
        seen.append((len(episodes), more))
        return agent.prior_z(1) if more else None

    episodes = sampler.collect(agent, 11, after_episode=after)
    assert [e.length for e in episodes] == [5, 5, 5]  # whole episodes until >= 11 steps
    assert seen == [(1, True), (2, True), (3, False)]
    for e in episodes:
        dense, sparse = e.samples["next", "reward"], e.context["next", "reward"]
        assert torch.all(dense <= 0) and torch.all(sparse >= 0)
        assert torch.equal(e.context["prev_reward"][1:], sparse[:-1])
        assert e.ret == float(sparse.sum())
        assert torch.equal(e.context["observation"], e.samples["observation"])
    assert sampler.collect(agent, 0) == []


def _torchrl_point_robot(name="point-robot", scale=2.0, **kwargs):
    """The gymnasium family behind TorchRL's wrapper and a reward transform."""
    from torchrl.envs import GymWrapper, RewardScaling, TransformedEnv

    from tdrl.envs import make_meta_env

    family = make_meta_env(name, **kwargs)
    if not name.startswith("sparse"):
        return TransformedEnv(GymWrapper(family), RewardScaling(0.0, scale))
    from torchrl.envs.libs.gym import default_info_dict_reader

    env = GymWrapper(_ArrayInfo(family))
    env.set_info_dict_reader(default_info_dict_reader(["sparse_reward"]))
    return TransformedEnv(env, RewardScaling(0.0, scale))


class _ArrayInfo(gym.Wrapper):
    """``info["sparse_reward"]`` as a ``[1]`` array (TorchRL's info reader needs arrays),
    with the family's task interface."""

    def __init__(self, env):
        super().__init__(env)
        self.max_episode_steps = env.max_episode_steps
        self.set_task, self.get_task, self.sample_tasks = (
            env.set_task,
            env.get_task,
            env.sample_tasks,
        )

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["sparse_reward"] = np.array([info["sparse_reward"]], dtype=np.float32)
        return obs, reward, terminated, truncated, info


def test_episode_sampler_steps_a_torchrl_env_with_its_transforms():
    """A TorchRL env (wrapper + reward transform): the episodes of stepping it by hand
    through TorchRL's calls, with the transform's rewards (twice the family's ``-|s - g|``)."""

    from tdrl.samplers.episodes import EpisodeSampler

    _, agent = _sampler_and_agent()
    sampler = EpisodeSampler(_torchrl_point_robot, {"max_episode_steps": 5}, env_rank=1)
    sampler.initialize(seed=7)
    assert sampler.max_episode_steps == 5 and tuple(sampler.observation_spec.shape) == (2,)
    task = sampler.env.sample_tasks(1, seed=1)[0]
    sampler.set_task(task)
    try:
        episodes = [sampler.episode(agent) for _ in range(2)]
    finally:
        sampler.close()
    env = _torchrl_point_robot(max_episode_steps=5)
    env.set_task(task)
    env.set_seed(7 + 1)  # the sampler's start: seed + env_rank, then a reset
    env.reset()
    for episode in episodes:
        td = env.reset()
        prev_action, prev_reward = torch.zeros(1, 2), torch.zeros(1, 1)
        got = episode.samples
        assert got.batch_size == (5, 1)
        for t in range(5):
            obs = td["observation"].reshape(1, 2)
            action, _ = agent.step(obs, prev_action, prev_reward)
            td = env.step(td.set("action", action[0]))
            nxt = td["next"]
            assert torch.equal(got["observation"][t], obs)
            assert torch.equal(got["prev_reward"][t], prev_reward)
            assert torch.equal(got["action"][t], action)
            assert torch.equal(got["next", "reward"][t, 0], nxt["reward"])
            goal = torch.as_tensor(np.asarray(task["goal"]), dtype=torch.float32)
            distance = torch.linalg.vector_norm(nxt["observation"] - goal)
            torch.testing.assert_close(nxt["reward"][0], -2.0 * distance)
            assert bool(got["next", "truncated"][t]) == bool(nxt["truncated"]) == (t == 4)
            prev_action, prev_reward = action, nxt["reward"].reshape(1, 1)
            td = env.step_mdp(td) if t < 4 else td
        assert episode.ret == pytest.approx(float(got["next", "reward"].sum()))


def test_episode_sampler_reads_a_torchrl_envs_sparse_reward_for_the_encoder():
    from tdrl.samplers.episodes import EpisodeSampler

    sampler = EpisodeSampler(
        _torchrl_point_robot,
        {"name": "sparse-point-robot", "scale": 1.0, "goal_radius": 0.2, "max_episode_steps": 5},
        sparse_rewards=True,
    )
    sampler.initialize(seed=0)
    _, agent = _sampler_and_agent()
    try:
        sampler.set_task(sampler.env.sample_tasks(1, seed=0)[0])
        episode = sampler.episode(agent)
    finally:
        sampler.close()
    dense, sparse = episode.samples["next", "reward"], episode.context["next", "reward"]
    assert torch.all(dense <= 0) and torch.all(sparse >= 0)
    assert episode.ret == float(sparse.sum())


def _point_robot_without_limit():
    from tdrl.envs import make_meta_env

    env = make_meta_env("point-robot")
    env.max_episode_steps = None  # an env that declares no episode limit
    return env


def _pendulum():
    return gym.make("Pendulum-v1")  # no task interface


def _batched_point_robot():
    from functools import partial

    from torchrl.envs import SerialEnv

    env = SerialEnv(1, partial(_torchrl_point_robot, max_episode_steps=5))  # batch size [1]
    env.set_task = lambda task: None
    return env


@pytest.mark.parametrize(
    ("env_fn", "match"),
    [
        (_point_robot_without_limit, r"max_episode_steps >= 1; _point_robot_without_limit\("),
        (_pendulum, r"_pendulum\(\*\*env_kwargs\) returned a .* without set_task"),
        (_batched_point_robot, r"steps one env of batch size \[\]; .* of batch size \[1\]"),
    ],
)
def test_episode_sampler_refuses_envs_it_cannot_step_in_one_line(env_fn, match):
    from tdrl.samplers.episodes import EpisodeSampler

    with pytest.raises(TypeError, match=match) as info:
        EpisodeSampler(env_fn).initialize(seed=0)
    assert "\n" not in str(info.value)
