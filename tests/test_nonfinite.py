"""The non-finite guard: NaN and infinity stop the run (or are skipped), never trained.

Each family meets ``NonFiniteEnv``, which returns NaN, an infinity or a huge finite value at
a chosen step: the run stops with one line naming the key, the env column, the time step
and the iteration, no parameter is ever non-finite, and the snapshot on disk stays the
last good one. ``nonfinite="skip"`` skips refused updates and counts them.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from tdrl.agents import CategoricalPgAgent, DqnAgent, GaussianPgAgent, R2d1Agent, SacAgent
from tdrl.algos import A2C, DDPG, DQN, PPO, R2D1, SAC, TD3, CategoricalDQN
from tdrl.algos.qpg.pearl import PEARL
from tdrl.algos.qpg.sac_v import SAC_V
from tdrl.envs import NonFiniteTrajInfo, ZeroNonFinite, space_to_spec
from tdrl.logging import load_snapshot, logger_context
from tdrl.runners import MinibatchRl
from tdrl.runners.base import check_finite_agent
from tdrl.samplers import SerialSampler
from tdrl.testing import NonFiniteEnv
from tdrl.utils.checks import ArgumentError
from tdrl.utils.finite import NonFiniteError, check_env_batch
from tdrl.utils.optim import clipped_step

T, B = 8, 2


def _ppo(recurrent=False):
    return PPO(minibatches=1, epochs=2), CategoricalPgAgent(recurrent=recurrent)


def _dqn():
    algo = DQN(batch_size=8, min_steps_learn=16, replay_size=256, replay_ratio=1)
    return algo, DqnAgent(model_kwargs={"hidden_sizes": (8,)})


def _sac():
    algo = SAC(batch_size=8, min_steps_learn=16, replay_size=256, replay_ratio=1)
    small = {"hidden_sizes": (8,)}
    return algo, SacAgent(model_kwargs=small, q_model_kwargs=small)


def _r2d1():
    algo = R2D1(
        sequence_length=4,
        batch_sequences=2,
        warmup_T=0,
        store_rnn_state_interval=4,
        n_step_return=1,
        min_steps_learn=16,
        replay_size=256,
        replay_ratio=1,
    )
    model = {"hidden_sizes": (8,), "lstm_size": 8, "head_sizes": (8,)}
    return algo, R2d1Agent(model_kwargs=model)


FAMILIES = {
    "ppo": (_ppo, False),
    "recurrent_ppo": (lambda: _ppo(recurrent=True), False),
    "a2c": (lambda: (A2C(), GaussianPgAgent()), True),
    "dqn": (_dqn, False),
    "r2d1": (_r2d1, False),
    "sac": (_sac, True),
}


def _run(family, *, n_itr=4, nonfinite="raise", env_fn=NonFiniteEnv, **env_kwargs):
    make, continuous = FAMILIES[family]
    algo, agent = make()
    sampler = SerialSampler(
        env_fn,
        {"continuous": continuous, **env_kwargs},
        batch_T=T,
        batch_B=B,
        max_decorrelation_steps=0,
        **({"traj_info_cls": NonFiniteTrajInfo} if env_fn is not NonFiniteEnv else {}),
    )
    runner = MinibatchRl(
        algo,
        agent,
        sampler,
        n_steps=n_itr * T * B,
        seed=0,
        log_interval_steps=T * B,
        progress_bar=False,
        nonfinite=nonfinite,
    )
    return runner, agent


def _finite(agent):
    return all(bool(torch.isfinite(p).all()) for p in agent.parameters())


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize(("where", "value"), [("reward", math.nan), ("observation", math.inf)])
def test_a_non_finite_env_value_stops_every_family_naming_where(tmp_path, family, where, value):
    at_step = 2 * T + 3  # iteration 2, time step 3
    with logger_context(tmp_path, 0, "nan", {}, echo=False) as logger:
        runner, agent = _run(family, at_step=at_step, where=where, value=value)
        with pytest.raises(NonFiniteError) as err:
            runner.train()
    message = str(err.value)
    assert "\n" not in message and message.startswith("iteration 2: "), message
    assert "b=0" in message and ("t=3" in message or "t=4" in message), message
    assert where in message, message
    assert _finite(agent)
    snap = load_snapshot(logger.run_dir / "params.pkl")  # the last good one: iteration 1
    assert snap["itr"] == 1
    state = snap["agent_state_dict"].values()
    assert all(bool(torch.isfinite(v).all()) for v in state if v.is_floating_point())


@pytest.mark.parametrize("family", ["ppo", "recurrent_ppo", "a2c"])
def test_a_loss_that_overflows_is_refused_before_the_step(family):
    runner, agent = _run(family, at_step=T + 2, value=1e38)  # finite, but its returns are not
    with pytest.raises(NonFiniteError, match=r"^iteration 1: non-finite loss.*not applied"):
        runner.train()
    assert _finite(agent)


def test_skip_counts_refused_updates_and_keeps_training(tmp_path):
    with logger_context(tmp_path, 0, "skip", {}, echo=False) as logger:
        runner, agent = _run("ppo", at_step=T + 2, value=1e38, nonfinite="skip")
        row = runner.train()
    assert row["Diagnostics/NonFiniteSkips"] == 1.0 and _finite(agent)
    with open(logger.run_dir / "progress.csv", newline="") as f:
        skips = [float(r["Diagnostics/NonFiniteSkips"]) for r in csv.DictReader(f)]
    assert skips == [0.0, 1.0, 1.0, 1.0]


def test_skip_does_not_tolerate_env_values():
    runner, _ = _run("ppo", at_step=T + 2, nonfinite="skip")
    with pytest.raises(NonFiniteError, match=r"non-finite next\.reward"):
        runner.train()


def test_zero_non_finite_wrapper_tolerates_env_values_and_counts_them(tmp_path):
    def env_fn(**kwargs):
        return ZeroNonFinite(NonFiniteEnv(**kwargs))

    with logger_context(tmp_path, 0, "zero", {}, echo=False):
        runner, agent = _run("ppo", env_fn=env_fn, at_step=3, where="observation")
        row = runner.train()
    assert _finite(agent) and row["NonFiniteValuesAverage"] > 0


def test_zero_non_finite_replaces_nested_and_scalar_values():
    class Env(NonFiniteEnv):
        def reset(self, **kwargs):
            _, info = super().reset(**kwargs)
            return {"a": np.array([np.nan, 1.0]), "b": 3}, info

    env = ZeroNonFinite(Env(at_step=0, value=-math.inf))
    obs, info = env.reset(seed=0)
    assert obs["a"].tolist() == [0.0, 1.0] and obs["b"] == 3 and info["nonfinite"] == 1
    _, reward, *_, info = env.step(0)
    assert reward == 0.0 and info["nonfinite"] == 1 and env.replaced == 2


def test_a_non_finite_parameter_is_never_logged_or_snapshotted(tmp_path):
    """An update that breaks the weights without a refused step (e.g. a compiled one)."""

    class Breaking(PPO):
        def optimize_agent(self, itr, samples):
            info = super().optimize_agent(itr, samples)
            if itr == 2:
                with torch.no_grad():
                    next(self.agent.parameters()).fill_(math.nan)
            return info

    with logger_context(tmp_path, 0, "param", {}, echo=False) as logger:
        sampler = SerialSampler(NonFiniteEnv, {"at_step": 10**9}, batch_T=T, batch_B=B)
        runner = MinibatchRl(
            Breaking(),
            CategoricalPgAgent(),
            sampler,
            n_steps=4 * T * B,
            seed=0,
            log_interval_steps=T * B,
            progress_bar=False,
        )
        with pytest.raises(NonFiniteError, match=r"^iteration 2: parameter .* is not finite"):
            runner.train()
    assert load_snapshot(logger.run_dir / "params.pkl")["itr"] == 1
    with open(logger.run_dir / "progress.csv", newline="") as f:
        assert [int(r["Diagnostics/Iteration"]) for r in csv.DictReader(f)] == [0, 1]


def test_check_finite_agent_names_the_parameter():
    agent = CategoricalPgAgent()
    agent.initialize(*_specs())
    check_finite_agent(0, agent)
    name, param = list(agent.named_parameters())[-1]
    with torch.no_grad():
        param.view(-1)[0] = math.inf
    with pytest.raises(NonFiniteError, match=f"iteration 7: parameter {name} "):
        check_finite_agent(7, agent)


def _specs():
    env = NonFiniteEnv()
    return space_to_spec(env.observation_space), space_to_spec(env.action_space)


def test_clipped_step_refuses_a_non_finite_gradient_without_stepping():
    layer = torch.nn.Linear(2, 1)
    before = [p.detach().clone() for p in layer.parameters()]
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    loss = layer(torch.tensor([[math.inf, 1.0]])).sum() * 0 + layer.weight.sum() * math.nan
    with pytest.raises(NonFiniteError, match=r"non-finite loss = nan.*grad_norm = nan"):
        clipped_step([optimizer], {"loss": loss}, {"": list(layer.parameters())}, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))


def test_check_env_batch_names_nested_observation_keys():
    from tensordict import TensorDict

    samples = TensorDict(
        {
            "observation": {"pos": torch.zeros(3, 2, 2)},
            "next": {"reward": torch.zeros(3, 2, 1)},
        },
        batch_size=(3, 2),
    )
    check_env_batch(samples)
    samples["observation", "pos"][2, 1, 0] = math.nan
    where = r"observation\.pos \(nan\) in env column b=1 at time step t=2"
    with pytest.raises(NonFiniteError, match=where):
        check_env_batch(samples)


@pytest.mark.parametrize(
    "build",
    [
        lambda kw: PPO(**kw),
        lambda kw: A2C(**kw),
        lambda kw: DQN(**kw),
        lambda kw: CategoricalDQN(**kw),
        lambda kw: R2D1(**kw),
        lambda kw: DDPG(**kw),
        lambda kw: TD3(**kw),
        lambda kw: SAC(**kw),
        lambda kw: SAC_V(**kw),
        lambda kw: PEARL(**kw),
    ],
)
@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"betas": 5}, "subscriptable"),
        ({"bogus": 1}, "bogus"),
        ({"weight_decay": -1.0}, "weight_decay"),
    ],
)
def test_optimizer_kwargs_are_checked_when_the_algorithm_is_built(build, kwargs, reason):
    message = rf"^optim_kwargs=.* are not valid for Adam: .*{reason}"
    with pytest.raises(ArgumentError, match=message):
        build({"optim_kwargs": kwargs})
    with pytest.raises(
        ArgumentError,
        match=r"^optim_kwargs=\{'lr': 0\.1.*\} are not valid for Adam: 'lr' is set by",
    ):
        build({"optim_kwargs": {"lr": 0.1}})


def test_async_rl_reports_a_non_finite_env_value_from_its_sampler():
    from tdrl.runners import AsyncRl

    sampler = SerialSampler(
        NonFiniteEnv, {"at_step": 2 * T + 1}, batch_T=T, batch_B=B, max_decorrelation_steps=0
    )
    algo, agent = _dqn()
    runner = AsyncRl(
        algo, agent, sampler, n_steps=6 * T * B, seed=0, log_interval_steps=T * B,
        progress_bar=False,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"sampler thread failed: NonFiniteError: iteration 2: "):
        runner.train()
    assert _finite(agent)
