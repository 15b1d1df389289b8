"""Episode records end at the real game end (``info["traj_done"]``), as in rlpyt.

A lost life with ``episodic_lives`` is a terminal for the learner (``terminated``, the
agent's previous action, reward and recurrent state reset) but the ``TrajInfo`` record goes
on: ``Return``, ``GameScore`` and ``Length`` are whole-game figures in training.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from tdrl.agents.base import Agent
from tdrl.envs.traj_info import TrajInfo
from tdrl.samplers import CpuSampler, SerialSampler
from tdrl.samplers.env_loop import game_ended

LIFE, LIVES = 3, 3


class LivesEnv(gym.Env):
    """A game of ``LIVES`` lives of ``LIFE`` steps; reward 1 per step, ``info["score"]`` 10.

    Every lost life is ``terminated``; ``info["traj_done"]`` is true at the game's end only.
    ``reset`` after a lost life continues the game (the observation keeps counting).
    """

    def __init__(self):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.game_over, self.k, self.lives = True, 0, LIVES

    def _obs(self):
        return np.array([self.k, self.lives], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if self.game_over:
            self.game_over, self.k, self.lives = False, 0, LIVES
        return self._obs(), {}

    def step(self, action):
        self.k += 1
        lost = self.k % LIFE == 0
        self.lives -= lost
        self.game_over = self.lives == 0
        info = {"score": 10.0, "traj_done": self.game_over}
        return self._obs(), 1.0, bool(lost), False, info


class ScoreTrajInfo(TrajInfo):
    def __init__(self):
        super().__init__()
        self.Score = 0.0

    def step_info(self, info):
        self.Score += info["score"]


class PrevInputsAgent(Agent):
    """Action 1 always; records each step's prev_action and prev_reward."""

    def __init__(self):
        super().__init__(model=torch.nn.Linear(1, 1))
        self.seen: list[torch.Tensor] = []

    def step(self, observation, prev_action, prev_reward):
        self.seen.append(torch.stack([prev_action.float().flatten(), prev_reward.flatten()]))
        return torch.ones(observation.shape[0], dtype=torch.long), {}


@pytest.mark.parametrize("mid_batch_reset", [True, False])
@pytest.mark.parametrize("traj_info_cls", [TrajInfo, ScoreTrajInfo])
def test_records_span_whole_games_while_lives_are_terminals(mid_batch_reset, traj_info_cls):
    sampler = SerialSampler(
        LivesEnv,
        batch_T=4 * LIFE * LIVES,
        batch_B=2,
        max_decorrelation_steps=0,
        mid_batch_reset=mid_batch_reset,
        traj_info_cls=traj_info_cls,
    )
    agent = PrevInputsAgent()
    sampler.initialize(agent, seed=0)
    samples, trajs = sampler.obtain_samples(0)
    terminated = samples.get(("next", "terminated"))[..., 0]
    if mid_batch_reset:  # every life is a terminal for the learner
        assert terminated[LIFE - 1 :: LIFE].all() and terminated.sum() == terminated.numel() / LIFE
        assert len(trajs) == 2 * 4
    else:  # wait-reset: the column waits after its first lost life
        assert len(trajs) == 0
    for traj in trajs:
        assert traj.Length == LIFE * LIVES and traj.Return == LIFE * LIVES
        if traj_info_cls is ScoreTrajInfo:
            assert traj.Score == 10.0 * LIFE * LIVES
    if mid_batch_reset:  # prev_action/prev_reward are nulled after each lost life
        prev = torch.stack(agent.seen[-4 * LIFE * LIVES :])[:, :, 0].numpy()  # [T, 2], env 0
        assert (prev[LIFE::LIFE] == 0).all()
        assert (prev[1:LIFE] == 1).all()
    sampler.shutdown()


def test_decorrelation_keeps_the_game_record_going():
    sampler = SerialSampler(
        LivesEnv, batch_T=LIFE * LIVES, batch_B=4, max_decorrelation_steps=LIFE * LIVES
    )
    sampler.initialize(PrevInputsAgent(), seed=3)
    trajs = [t for i in range(3) for t in sampler.obtain_samples(i)[1]]
    assert trajs and all(t.Length == LIFE * LIVES for t in trajs)
    sampler.shutdown()


def test_parallel_workers_close_records_at_game_end():
    sampler = CpuSampler(
        LivesEnv, batch_T=2 * LIFE * LIVES, batch_B=2, n_workers=2, max_decorrelation_steps=0
    )
    try:
        sampler.initialize(PrevInputsAgent(), seed=0)
        _, trajs = sampler.obtain_samples(0)
    finally:
        sampler.shutdown()
    assert len(trajs) == 4 and {t.Length for t in trajs} == {LIFE * LIVES}


@pytest.mark.parametrize(
    ("info", "ended"),
    [(None, True), ({}, True), ({"traj_done": True}, True), ({"traj_done": np.False_}, False)],
)
def test_game_ended_reads_traj_done_and_defaults_to_the_episode_end(info, ended):
    assert game_ended(info) is ended


def test_breakout_training_records_are_whole_games():
    pytest.importorskip("ale_py")
    from tdrl.envs.atari import AtariTrajInfo, make_atari_env

    class Random(Agent):
        def __init__(self):
            super().__init__(model=torch.nn.Linear(1, 1))

        def step(self, observation, prev_action, prev_reward):
            return torch.randint(4, (observation.shape[0],)), {}

    torch.manual_seed(0)
    sampler = SerialSampler(
        make_atari_env,
        env_kwargs={"game": "breakout", "seed": 0},
        batch_T=1500,
        batch_B=1,
        max_decorrelation_steps=0,
        traj_info_cls=AtariTrajInfo,
    )
    sampler.initialize(Random(), seed=0)
    samples, trajs = sampler.obtain_samples(0)
    sampler.shutdown()
    assert trajs, "a random Breakout game lasts well under 1500 steps"
    length = trajs[0].Length
    terminated = samples.get(("next", "terminated"))[:length, 0, 0]
    # Five lives, each a terminal for the learner; the record ends with the last.
    assert int(terminated.sum()) == 5 and bool(terminated[length - 1])
    assert trajs[0].GameScore == float(samples.get(("next", "reward"))[:length].sum())
