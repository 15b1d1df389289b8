"""Recurrent agents: the LSTM core, the state the samplers carry and record, recurrent A2C
and PPO on ``[T, B]`` sequences, Atari policy-gradient models and the memory-task learning
check (slow)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.testing import assert_close

from tdrl import keys
from tdrl.agents import CategoricalPgAgent, GaussianPgAgent
from tdrl.algos import A2C, PPO
from tdrl.algos.pg.base import process_returns
from tdrl.envs import make_gym_env
from tdrl.models.lstm import LstmCore
from tdrl.models.pg.atari import AtariFfModel
from tdrl.models.pg.lstm import PgLstmModel, mlp_trunk
from tdrl.runners import MinibatchRl
from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler
from tdrl.testing import ContinuousIdentityEnv, CountingEnv

ENV_KW = {"episode_length": 5, "n_actions": 3}
SMALL = {"hidden_sizes": (8,), "lstm_size": 8}


def _agent(seed=0, **kwargs):
    torch.manual_seed(seed)
    return CategoricalPgAgent(recurrent=True, model_kwargs=SMALL, **kwargs)


def _sampler(cls=SerialSampler, T=7, B=4, mid_batch_reset=True, **kwargs):
    if cls is not SerialSampler:
        kwargs.setdefault("n_workers", 2)
    return cls(
        CountingEnv,
        ENV_KW,
        batch_T=T,
        batch_B=B,
        mid_batch_reset=mid_batch_reset,
        max_decorrelation_steps=3,
        **kwargs,
    )


# ------------------------------------------------------------------------------ the core
def test_lstm_core_resets_equal_a_step_by_step_loop():
    torch.manual_seed(0)
    core = LstmCore(3, 5, num_layers=2)
    T, B = 9, 4
    x = torch.randn(T, B, 3)
    is_init = torch.rand(T, B) < 0.3
    state = core.initial_state(B)
    h0, c0 = torch.randn_like(state["h"]), torch.randn_like(state["c"])
    y, (h, c) = core(x, (h0, c0), is_init)
    hh, cc, ys = h0.transpose(0, 1), c0.transpose(0, 1), []
    for t in range(T):
        keep = (~is_init[t]).float().view(1, B, 1)
        yt, (hh, cc) = core.lstm(x[t : t + 1], (hh * keep, cc * keep))
        ys.append(yt)
    assert_close(y, torch.cat(ys), atol=1e-6, rtol=0)
    assert_close(h, hh.transpose(0, 1), atol=1e-6, rtol=0)
    assert_close(c, cc.transpose(0, 1), atol=1e-6, rtol=0)
    # one step without resets (the acting path, through lstm_cell) equals nn.LSTM
    y1, (h1, c1) = core(x[:1], (h0, c0))
    y2, (h2, c2) = core.lstm(x[:1], (h0.transpose(0, 1), c0.transpose(0, 1)))
    assert_close(y1, y2, atol=1e-6, rtol=0)
    assert_close(h1, h2.transpose(0, 1), atol=1e-6, rtol=0)
    assert_close(c1, c2.transpose(0, 1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("critic_lstm", [False, True])
def test_model_one_step_calls_equal_the_sequence_call(critic_lstm):
    torch.manual_seed(1)
    model = PgLstmModel(_Flat(2), 3, lstm_size=6, critic_lstm=critic_lstm)
    T, B = 6, 3
    obs, pa, pr = torch.randn(T, B, 2), torch.randint(0, 3, (T, B)), torch.randn(T, B, 1)
    is_init = torch.zeros(T, B, dtype=torch.bool)
    is_init[3, 1] = True
    state = model.initial_state(B)
    h, c = state["h"], state["c"]
    assert h.shape == (B, 2 if critic_lstm else 1, 6)
    logits, value, _ = model(obs, pa, pr, (h, c), is_init)
    for t in range(T):
        keep = (~is_init[t]).float().view(B, 1, 1)
        lt, vt, (h, c) = model(obs[t], pa[t], pr[t], (h * keep, c * keep))
        assert_close(lt, logits[t], atol=1e-6, rtol=0)
        assert_close(vt, value[t], atol=1e-6, rtol=0)


class _Flat(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.output_size = n

    def forward(self, x):
        return x


# ------------------------------------------------------------------- the sampler's state
@pytest.mark.parametrize("mid_batch_reset", [True, False])
def test_training_forward_replays_the_sampled_steps(mid_batch_reset):
    """From the stored first state, with resets at ``is_init``, the training forward gives
    exactly the log-probabilities and values the agent acted with, across batches."""
    agent = _agent()
    sampler = _sampler(mid_batch_reset=mid_batch_reset)
    sampler.initialize(agent, seed=2)
    previous = None
    for itr in range(3):
        samples, _ = sampler.obtain_samples(itr)
        out = agent(samples)
        log_prob = agent.distribution(out).log_prob(samples[keys.ACTION])
        valid = samples.get(keys.VALID, torch.ones_like(log_prob, dtype=torch.bool))
        assert_close(log_prob[valid], samples[keys.LOG_PROB][valid], atol=1e-5, rtol=0)
        assert_close(out[keys.VALUE][valid], samples[keys.VALUE][valid], atol=1e-5, rtol=0)
        state, nxt = samples[keys.RNN_STATE], samples[keys.NEXT_RNN_STATE]
        is_init = samples[keys.IS_INIT]
        # the state after a reset is the initial (zero) state
        assert (state["h"][is_init] == 0).all() and (state["c"][is_init] == 0).all()
        # and otherwise it is the state the previous step left
        cont = ~is_init[1:]
        assert_close(state["h"][1:][cont], nxt["h"][:-1][cont], atol=0, rtol=0)
        if previous is not None:  # carried across batches
            go_on = ~is_init[0]
            assert_close(state["c"][0][go_on], previous["c"][go_on], atol=0, rtol=0)
        previous = nxt[-1].clone()
        # episode starts are exactly the steps after done (and the batch's fresh envs)
        done = samples[keys.NEXT_DONE][..., 0]
        if mid_batch_reset:
            assert torch.equal(is_init[1:], done[:-1])


def test_evaluation_keeps_its_own_state():
    agent = _agent()
    sampler = SerialSampler(
        CountingEnv, ENV_KW, batch_T=6, batch_B=2, eval_n_envs=2, eval_max_steps=20
    )
    sampler.initialize(agent, seed=0)
    sampler.obtain_samples(0)
    carried = [c.copy() for c in sampler._runner.rnn_carry]
    assert any(np.abs(c).sum() > 0 for c in carried)
    assert sampler.evaluate_agent(0)
    for before, after in zip(carried, sampler._runner.rnn_carry, strict=True):
        np.testing.assert_array_equal(before, after)
    samples, _ = sampler.obtain_samples(1)
    first = samples[keys.RNN_STATE][0]
    go_on = ~samples[keys.IS_INIT][0]
    np.testing.assert_array_equal(first["h"][go_on].numpy(), carried[0][go_on.numpy()])


@pytest.fixture(scope="module")
def serial_reference():
    return _collect(SerialSampler)


def _collect(cls, n_batches=3):
    """Batches of a deterministic recurrent agent (eval mode, argmax actions)."""
    agent = _agent(eval_deterministic=True)
    sampler = _sampler(cls)
    sampler.initialize(agent, seed=5, traj_info_kwargs={"discount": 0.9})
    out = []
    try:
        for itr in range(n_batches):
            agent.eval_mode(itr)
            samples, trajs = sampler.obtain_samples(itr)
            out.append((samples.clone(), sorted((tr.Length, tr.Return) for tr in trajs)))
            with torch.no_grad():  # a learner update: must reach the workers
                for p in agent.parameters():
                    p.add_(0.05)
    finally:
        sampler.shutdown()
    return out


@pytest.mark.parametrize("cls", [CpuSampler, GpuSampler, AlternatingSampler])
def test_every_sampler_returns_the_serial_recurrent_batches(cls, serial_reference):
    for (ours, ours_trajs), (ref, ref_trajs) in zip(_collect(cls), serial_reference, strict=True):
        assert ours_trajs == ref_trajs
        assert torch.equal(ours[keys.ACTION], ref[keys.ACTION])
        assert torch.equal(ours[keys.IS_INIT], ref[keys.IS_INIT])
        for key in (keys.RNN_STATE, keys.NEXT_RNN_STATE, keys.VALUE):
            assert_close(ours[key], ref[key], atol=1e-5, rtol=0)


def test_dict_observations_reach_a_custom_recurrent_model_untouched():
    """A user's recurrent model reads its own keys of a Dict observation."""

    class DictEnv(gym.Env):
        observation_space = gym.spaces.Dict(
            {"img": gym.spaces.Box(0, 255, (2, 3), np.uint8), "vec": gym.spaces.Box(-1, 1, (2,))}
        )
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t = 0
            return self._obs(), {}

        def _obs(self):
            return {"img": np.full((2, 3), self.t, np.uint8), "vec": np.full(2, 0.1 * self.t)}

        def step(self, action):
            self.t += 1
            return self._obs(), 1.0, self.t >= 4, False, {}

    seen = []

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.core = LstmCore(8, 4)
            self.pi, self.v = torch.nn.Linear(4, 2), torch.nn.Linear(4, 1)

        def initial_state(self, batch_size, device=None):
            return self.core.initial_state(batch_size, device)

        def forward(self, observation, prev_action, prev_reward, state, is_init=None):
            seen.append(observation)
            lead = prev_reward.shape[:-1]
            x = torch.cat([observation["img"].float().flatten(len(lead)), observation["vec"]], -1)
            seq = x.unsqueeze(0) if len(lead) == 1 else x
            y, state = self.core(seq, state, is_init if len(lead) == 2 else None)
            y = y[0] if len(lead) == 1 else y
            return self.pi(y), self.v(y).squeeze(-1), state

    agent = CategoricalPgAgent(Model())
    sampler = SerialSampler(lambda: DictEnv(), batch_T=5, batch_B=2, max_decorrelation_steps=0)
    sampler.initialize(agent, seed=0)
    samples, _ = sampler.obtain_samples(0)
    assert isinstance(seen[-1], TensorDict) and set(seen[-1].keys()) == {"img", "vec"}
    assert seen[-1]["img"].dtype == torch.uint8
    assert samples[keys.OBSERVATION]["img"][2, 0, 0, 0] == 2
    out = agent(samples)
    assert_close(out[keys.VALUE], samples[keys.VALUE], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------ A2C and PPO
def test_next_values_continue_from_the_stored_next_state():
    """V(o_{t+1}) from ``("next", "rnn_state")`` equals the value the agent computed at
    step t+1 wherever the episode went on."""
    agent = _agent()
    sampler = _sampler(T=8)
    sampler.initialize(agent, seed=1)
    samples, _ = sampler.obtain_samples(0)
    with torch.no_grad():
        next_value = agent.value(
            samples[keys.NEXT_OBSERVATION],
            samples[keys.ACTION],
            samples[keys.NEXT_REWARD],
            samples[keys.NEXT_RNN_STATE],
        )
    go_on = ~samples[keys.NEXT_DONE][:-1, :, 0]
    assert_close(next_value[:-1][go_on], samples[keys.VALUE][1:][go_on], atol=1e-5, rtol=0)
    batch = process_returns(
        agent, samples, discount=0.9, gae_lambda=0.95, normalize_advantage=False
    )
    assert keys.RNN_STATE in batch and keys.IS_INIT in batch


def test_ppo_minibatches_are_whole_sequences_of_some_envs():
    agent = _agent()
    sampler = _sampler(T=6, B=4)
    sampler.initialize(agent, seed=0)
    algo = PPO(minibatches=2, epochs=2)
    algo.initialize(agent, n_itr=10, batch_spec=sampler.batch_spec)
    shapes = []
    forward = agent.forward

    def spy(td):
        shapes.append(tuple(td.batch_size))
        return forward(td)

    agent.forward = spy  # type: ignore[method-assign]
    samples, _ = sampler.obtain_samples(0)
    diagnostics = algo.optimize_agent(0, samples)
    assert shapes == [(6, 2)] * 4
    assert np.isfinite(diagnostics["loss"]).all()
    with pytest.raises(ValueError, match="minibatches=8 is larger than batch_B=4"):
        PPO(minibatches=8).initialize(agent, n_itr=1, batch_spec=sampler.batch_spec)


@pytest.mark.parametrize("algo_cls", [A2C, PPO])
def test_wait_reset_loss_uses_the_valid_steps_only(algo_cls):
    """Frozen steps after an episode end (wait-reset) change nothing: filling them with
    other data leaves the loss equal, and it equals the mean over the valid steps."""
    agent = _agent()
    sampler = _sampler(T=8, mid_batch_reset=False)
    sampler.initialize(agent, seed=0)
    algo = algo_cls()
    algo.initialize(agent, n_itr=1, batch_spec=sampler.batch_spec)
    samples, _ = sampler.obtain_samples(0)
    valid = samples[keys.VALID]
    assert not valid.all()
    batch = process_returns(agent, samples, discount=0.9, gae_lambda=1.0, normalize_advantage=False)
    loss = algo.loss(batch)
    garbled = batch.clone()
    junk = ~valid
    garbled[keys.OBSERVATION][junk] = 77.0
    garbled[keys.ADVANTAGE][junk] = 1e3
    garbled[keys.RETURN][junk] = -1e3
    assert_close(algo.loss(garbled)["loss"], loss["loss"])
    out = agent(batch)
    error = out[keys.VALUE] - batch[keys.RETURN]
    expected = algo.value_loss_coeff * (0.5 * error**2)[valid].mean()
    assert_close(loss["loss_value"], expected)


@pytest.mark.parametrize("algo_cls", [A2C, PPO])
def test_recurrent_loss_is_finite_and_reaches_every_parameter(algo_cls):
    agent = GaussianPgAgent(recurrent=True, model_kwargs=SMALL)
    sampler = SerialSampler(ContinuousIdentityEnv, {}, batch_T=5, batch_B=4)
    sampler.initialize(agent, seed=0)
    algo = algo_cls()
    algo.initialize(agent, n_itr=1, batch_spec=sampler.batch_spec)
    samples, _ = sampler.obtain_samples(0)
    batch = process_returns(agent, samples, discount=0.9, gae_lambda=1.0, normalize_advantage=False)
    loss = algo.loss(batch)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in agent.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_recurrent_run_saves_and_resumes(tmp_path):
    from tdrl.logging import logger_context

    def run(n_steps, resume):
        torch.manual_seed(0)
        agent = CategoricalPgAgent(recurrent=True, model_kwargs=SMALL)
        sampler = _sampler(T=8, B=2)
        runner = MinibatchRl(
            A2C(),
            agent,
            sampler,
            n_steps=n_steps,
            seed=3,
            log_interval_steps=16,
            progress_bar=False,
            resume_from=str(tmp_path / "run_0") if resume else None,
        )
        with logger_context(str(tmp_path), 0, "rec", {}, snapshot_mode="last", resume=resume):
            runner.train()
        return agent

    import csv

    from tdrl.logging import load_snapshot

    first = run(32, False)
    snap = load_snapshot(tmp_path / "run_0")  # the recurrent model's state, as trained
    for name, value in first.state_dict().items():
        assert torch.equal(snap["agent_state_dict"][name], value), name
    resumed = run(64, True)
    assert any(
        not torch.equal(a, b) for a, b in zip(first.parameters(), resumed.parameters(), strict=True)
    )
    with open(tmp_path / "run_0" / "progress.csv", newline="") as f:
        steps = [int(r["Diagnostics/CumSteps"]) for r in csv.DictReader(f)]
    assert steps == [16, 32, 48, 64]  # continued from the snapshot: nothing lost or repeated


# ------------------------------------------------------------------------------- Atari
def test_default_models_follow_the_observation():
    image = gym.spaces.Box(0, 255, (1, 84, 84), np.uint8)
    from tdrl.envs import space_to_spec

    obs, act = space_to_spec(image), space_to_spec(gym.spaces.Discrete(6))
    ff = CategoricalPgAgent()
    ff.initialize(space_to_spec(gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)), act)
    assert isinstance(ff.model, AtariFfModel) and not ff.recurrent
    lstm = CategoricalPgAgent(recurrent=True)
    lstm.initialize(obs, act)
    assert isinstance(lstm.model, PgLstmModel) and lstm.recurrent
    assert lstm.initial_rnn_state(3)["h"].shape == (3, 1, 512)
    frames = torch.randint(0, 256, (2, 1, 84, 84), dtype=torch.uint8)
    action, info = lstm.step(frames, torch.zeros(2, dtype=torch.long), torch.zeros(2, 1))
    assert action.shape == (2,) and info[keys.NEXT_RNN_STATE]["c"].shape == (2, 1, 512)


def test_cli_recurrent_flag(tmp_path, capsys):
    from tdrl.cli import main

    common = ["--n-steps", "512", "--batch-B", "4", "--no-progress", "--log-dir", str(tmp_path)]
    argv = ["train", "--algo", "ppo", "--env", "CartPoleNoVel-v1", "--recurrent", *common]
    assert main([*argv, "--batch-T", "32"]) == 0
    assert main(["train", "--algo", "dqn", "--env", "CartPole-v1", "--recurrent", *common]) == 2
    assert "--recurrent applies to a2c, ppo" in capsys.readouterr().err


def test_cartpole_no_vel_hides_the_velocities():
    env = make_gym_env("CartPoleNoVel-v1")
    full = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=3)
    ref, _ = full.reset(seed=3)
    np.testing.assert_array_equal(obs, ref[[0, 2]])
    assert env.observation_space.shape == (2,)


# --------------------------------------------------------------------------- learning
def _example_1():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tdrl_examples" / "example_1.py"
    spec = importlib.util.spec_from_file_location("example_1", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_1"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 72 s measured under load
def test_recurrent_ppo_solves_cartpole_no_vel_and_feed_forward_does_not(tmp_path):
    """The documented config (docs/recurrent.md): example 1 with ``--env-id
    CartPoleNoVel-v1 --recurrent --normalize-observation --critic-lstm --reward-scale 0.1``,
    100k steps; the feed-forward agent with the same settings."""
    example = _example_1()

    def final_return(recurrent):
        config = example.Config(
            env_id="CartPoleNoVel-v1",
            recurrent=recurrent,
            normalize_observation=True,
            critic_lstm=True,
            reward_scale=0.1,
            log_dir=str(tmp_path / str(recurrent)),
        )
        return example.build_and_train(config, progress_bar=False)["ReturnAverage"]

    assert final_return(True) >= 450
    assert final_return(False) < 200


def test_agents_with_the_three_argument_step_keep_working():
    """Feed-forward agents written before recurrent agents existed: step(o, a, r)."""
    from tdrl.agents.base import Agent

    class Old(Agent):
        def __init__(self):
            super().__init__(model=torch.nn.Linear(1, 1))

        def step(self, observation, prev_action, prev_reward):  # type: ignore[override]
            return torch.zeros(len(prev_reward), dtype=torch.long), {}

    sampler = SerialSampler(
        CountingEnv, ENV_KW, batch_T=3, batch_B=2, eval_n_envs=1, eval_max_steps=5
    )
    agent = Old()
    sampler.initialize(agent, seed=0)
    samples, _ = sampler.obtain_samples(0)
    assert keys.RNN_STATE not in samples and not agent.recurrent
    sampler.evaluate_agent(0)


@pytest.mark.parametrize("runner_kind", ["gpu_sampler", "async_thread"])
def test_r2d1_runs_with_the_action_server_and_asynchronously(runner_kind, tmp_path):
    """R2D1 end to end beyond the serial loop: the recurrent state through ``GpuSampler``'s
    action server, and ``AsyncRl`` (the R2D2 setting) with input priorities on append."""
    from tdrl.agents import R2d1Agent
    from tdrl.algos import R2D1
    from tdrl.logging import logger_context
    from tdrl.runners import AsyncRl

    algo = R2D1(
        batch_T=4,
        batch_B=4,
        warmup_T=2,
        store_rnn_state_interval=2,
        n_step_return=2,
        min_steps_learn=32,
        replay_size=400,
        replay_ratio=1,
        target_update_interval=5,
    )
    agent = R2d1Agent(model_kwargs={"hidden_sizes": (8,), "lstm_size": 8, "head_sizes": ()})
    if runner_kind == "gpu_sampler":
        sampler = GpuSampler(CountingEnv, ENV_KW, batch_T=8, batch_B=4, n_workers=2)
        runner = MinibatchRl(algo, agent, sampler, n_steps=256, seed=0, progress_bar=False)
    else:
        sampler = SerialSampler(CountingEnv, ENV_KW, batch_T=8, batch_B=4)
        runner = AsyncRl(algo, agent, sampler, n_steps=256, seed=0, progress_bar=False)
    with logger_context(str(tmp_path), 0, "r2d1", {}, echo=False):
        runner.train()
    assert algo.update_counter > 0
    assert len(algo.replay_buffer) > 0


def test_reward_scale_scales_the_returns_and_is_checked():
    agent = CategoricalPgAgent()  # feed-forward: prev_reward is not an input of its values
    sampler = _sampler(T=6)
    sampler.initialize(agent, seed=0)
    samples, _ = sampler.obtain_samples(0)
    kwargs = {"discount": 0.9, "gae_lambda": 0.95, "normalize_advantage": False}
    scaled = process_returns(agent, samples, reward_scale=0.1, **kwargs)
    by_hand = samples.clone()
    by_hand[keys.NEXT_REWARD] *= 0.1
    assert_close(scaled[keys.RETURN], process_returns(agent, by_hand, **kwargs)[keys.RETURN])
    for algo_cls in (A2C, PPO):
        assert algo_cls().reward_scale == 1.0
        with pytest.raises(ValueError, match="reward_scale"):
            algo_cls(reward_scale=0.0)


def test_recurrent_ppo_under_sync_rl(tmp_path):
    """Two ranks, each with its own sampler carrying its envs' states; whole-sequence
    minibatches and averaged gradients."""
    from tdrl.logging import logger_context
    from tdrl.runners import SyncRl

    agent = CategoricalPgAgent(recurrent=True, model_kwargs=SMALL)
    runner = SyncRl(
        PPO(minibatches=2, epochs=2),
        agent,
        _sampler(T=8, B=4),
        n_steps=256,
        world_size=2,
        seed=0,
        progress_bar=False,
    )
    with logger_context(str(tmp_path), 0, "rec", {}, echo=False):
        row = runner.train()
    assert row["Diagnostics/CumSteps"] == 256


def test_atari_lstm_model_takes_its_own_options():
    """``model_kwargs`` reach the LSTM model (heads, critic LSTM) and the conv trunk."""
    from tdrl.envs import space_to_spec

    agent = CategoricalPgAgent(
        recurrent=True,
        model_kwargs={"lstm_size": 16, "head_sizes": (8,), "critic_lstm": True, "fc_sizes": (32,)},
    )
    agent.initialize(
        space_to_spec(gym.spaces.Box(0, 255, (1, 84, 84), np.uint8)),
        space_to_spec(gym.spaces.Discrete(3)),
    )
    assert agent.model.critic_lstm is not None and agent.model.trunk.output_size == 32
    assert agent.initial_rnn_state(2)["h"].shape == (2, 2, 16)


def test_state_dependent_log_std_is_rlpyts_mujoco_lstm_layout():
    """``state_dependent_std``: the head gives ``[mu, log_std]`` (rlpyt's MujocoLstmModel);
    the log std then varies with the input and gets gradients; default: one parameter."""
    from tdrl.models.pg.lstm import mlp_trunk

    torch.manual_seed(0)
    model = PgLstmModel(mlp_trunk(3, (8,)), 2, gaussian=True, lstm_size=8,
                        state_dependent_std=True)  # fmt: skip
    assert not hasattr(model, "log_std") and model.pi.output_size == 4
    obs, prev_a, prev_r = torch.randn(5, 4, 3), torch.zeros(5, 4, 2), torch.zeros(5, 4, 1)
    zeros = model.initial_state(4)
    mu, log_std, value, _ = model(obs, prev_a, prev_r, (zeros["h"], zeros["c"]))
    assert mu.shape == log_std.shape == (5, 4, 2) and value.shape == (5, 4)
    assert log_std.std() > 0  # per state, not one vector
    log_std.sum().backward()
    assert sum(p.grad.abs().sum() for p in model.pi.parameters() if p.grad is not None) > 0
    plain = PgLstmModel(mlp_trunk(3, (8,)), 2, gaussian=True, lstm_size=8)
    _, log_std, _, _ = plain(obs, prev_a, prev_r, (zeros["h"], zeros["c"]))
    assert (log_std == plain.log_std).all()
    agent = GaussianPgAgent(recurrent=True, model_kwargs={"state_dependent_std": True})
    sampler = SerialSampler(ContinuousIdentityEnv, batch_T=4, batch_B=2)
    sampler.initialize(agent, seed=0)
    samples, _ = sampler.obtain_samples(0)
    assert torch.isfinite(samples.get(keys.ACTION)).all()
    sampler.shutdown()


class _NoState(torch.nn.Module):
    initial_state = None  # the protocol's member, unset: not recurrent


class _InstanceState(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.initial_state = lambda batch_size, device=None: TensorDict({}, [batch_size])


@pytest.mark.parametrize(
    "model",
    [
        torch.nn.Linear(2, 2),
        _NoState(),
        _InstanceState(),
        PgLstmModel(mlp_trunk(4, (8,)), 2, lstm_size=8),
        None,
    ],
    ids=["linear", "state-none", "instance-state", "lstm", "none"],
)
def test_is_recurrent_model_answers_as_the_protocol_check(model):
    from tdrl.agents.base import RecurrentModel, is_recurrent_model

    assert is_recurrent_model(model) == isinstance(model, RecurrentModel)
