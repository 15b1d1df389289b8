"""Malformed gymnasium env outputs are refused in one line naming the env and the output.

Without the checks these failed with NumPy's messages (``setting an array element with a
sequence``) or were stored silently wrong (a ``None`` reward as NaN, ``terminated="no"`` as
True).
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch

from tdrl.agents import CategoricalPgAgent
from tdrl.samplers import CpuSampler, SerialSampler
from tdrl.samplers.env_checks import EnvOutputError, check_step_output
from tdrl.utils.finite import NonFiniteError


class Env(gym.Env):
    """Steps ``step_out(self)`` (default: a valid step); episodes of 5 steps."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, step_out=None, reset_out=None):
        self.step_out, self.reset_out, self.t = step_out, reset_out, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        obs = np.zeros(3, np.float32)
        return (obs, {}) if self.reset_out is None else self.reset_out(obs)

    def step(self, action):
        self.t += 1
        out = (np.zeros(3, np.float32), 1.0, self.t >= 5, False, {})
        return out if self.step_out is None else self.step_out(out)


def _put(i, value, out):
    return (*out[:i], value, *out[i + 1 :])


def _replace(i, value):
    """A step output with entry ``i`` replaced (picklable, for the worker test)."""
    return functools.partial(_put, i, value)


def _old_gym(out):
    return (*out[:3], out[4])


BAD_STEPS = {
    "old gym 4-tuple": (_old_gym, r"a 4-tuple.*old gym API"),
    "observation shape": (_replace(0, np.zeros(4, np.float32)), r"observation of shape \(4,\)"),
    "observation strings": (_replace(0, np.array(["a", "b", "c"])), r"observation = .*numbers"),
    "reward None": (_replace(1, None), r"reward = None; expected a real number"),
    "reward array": (_replace(1, np.array([1.0])), r"reward = an array of shape \(1,\)"),
    "terminated str": (_replace(2, "no"), r"terminated = str 'no'; expected a bool"),
    "truncated 2": (_replace(3, 2), r"truncated = int 2; expected a bool"),
    "info list": (_replace(4, []), r"info = list \[\]; expected a dict"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_STEPS))
def test_a_malformed_first_step_is_refused_naming_env_and_output(case):
    step_out, message = BAD_STEPS[case]
    sampler = SerialSampler(
        Env, {"step_out": step_out}, batch_T=4, batch_B=2, max_decorrelation_steps=0
    )
    sampler.initialize(CategoricalPgAgent(), seed=0)
    pattern = r"^env column 0 \(Env\): step\(\) returned " + message
    with pytest.raises(EnvOutputError, match=pattern) as err:
        sampler.obtain_samples(0)
    assert "\n" not in str(err.value)
    sampler.shutdown()


@pytest.mark.parametrize(
    ("reset_out", "message"),
    [
        (lambda obs: obs, r"reset\(\) returned an array .* expected \(observation, info\)"),
        (lambda obs: (obs[:2], {}), r"reset\(\) returned observation of shape \(2,\)"),
        (lambda obs: (obs, None), r"reset\(\) returned info = None; expected a dict"),
    ],
    ids=["observation alone", "observation shape", "info None"],
)
def test_a_malformed_reset_is_refused_when_the_sampler_starts(reset_out, message):
    sampler = SerialSampler(Env, {"reset_out": reset_out}, batch_T=4, batch_B=2)
    with pytest.raises(EnvOutputError, match=r"^env column 0 \(Env\): " + message):
        sampler.initialize(CategoricalPgAgent(), seed=0)


def test_a_malformed_step_during_decorrelation_is_refused():
    sampler = SerialSampler(
        Env, {"step_out": _replace(1, None)}, batch_T=4, batch_B=2, max_decorrelation_steps=50
    )
    with pytest.raises(EnvOutputError, match=r"reward = None"):
        sampler.initialize(CategoricalPgAgent(), seed=0)


def test_a_worker_reports_a_malformed_step():
    sampler = CpuSampler(
        Env,
        {"step_out": _replace(2, "no")},
        batch_T=4,
        batch_B=2,
        n_workers=1,
        max_decorrelation_steps=0,
    )
    sampler.initialize(CategoricalPgAgent(), seed=0)
    try:
        with pytest.raises(Exception, match=r"terminated = str 'no'; expected a bool"):
            sampler.obtain_samples(0)
    finally:
        sampler.shutdown()


@pytest.mark.parametrize(
    "step_out",
    [
        _replace(1, np.float32(0.5)),
        _replace(1, np.array(0.5)),
        _replace(1, 1),
        _replace(1, True),
        _replace(2, np.bool_(False)),
        _replace(2, 0),
        _replace(3, np.array(False)),
        _replace(0, np.zeros(3, np.float64)),
        _replace(0, [0.0, 0.0, 0.0]),
        _replace(1, torch.tensor(1.0)),
        _replace(2, torch.tensor(False)),
    ],
    ids=[
        "np.float32",
        "0-d array",
        "int",
        "bool reward",
        "np.bool_",
        "int flag",
        "0-d flag",
        "float64 obs",
        "list obs",
        "torch reward",
        "torch flag",
    ],
)
def test_what_gymnasium_allows_passes(step_out):
    sampler = SerialSampler(Env, {"step_out": step_out}, batch_T=4, batch_B=2)
    sampler.initialize(CategoricalPgAgent(), seed=0)
    samples, _ = sampler.obtain_samples(0)
    assert samples.shape == (4, 2)
    sampler.shutdown()


def test_nested_observations_are_checked_leaf_by_leaf():
    space = gym.spaces.Dict(
        {
            "pos": gym.spaces.Box(-1, 1, (2,)),
            "more": gym.spaces.Dict({"vel": gym.spaces.Discrete(3)}),
        }
    )
    from tdrl.envs.spaces import space_to_spec

    spec = space_to_spec(space)
    good = {"pos": np.zeros(2, np.float32), "more": {"vel": 1}}
    check_step_output((good, 0.0, False, False, {}), Env(), 3, spec)
    with pytest.raises(EnvOutputError, match=r"^env column 3 \(Env\): step\(\) returned an "
                       r"observation without 'more/vel' \(found \[\]\)"):  # fmt: skip
        check_step_output(({"pos": good["pos"], "more": {}}, 0.0, False, False, {}), Env(), 3, spec)
    with pytest.raises(EnvOutputError, match=r"observation\['pos'\] of shape \(3,\)"):
        bad = {"pos": np.zeros(3), "more": {"vel": 1}}
        check_step_output((bad, 0.0, False, False, {}), Env(), 3, spec)


def _nan_observation(out):
    return _put(0, np.full(3, np.nan, np.float32), out)


def test_a_nan_observation_names_the_input_instead_of_torchs_error():
    sampler = SerialSampler(
        Env, {"step_out": _nan_observation}, batch_T=4, batch_B=2, max_decorrelation_steps=0
    )
    sampler.initialize(CategoricalPgAgent(), seed=0)
    with pytest.raises(NonFiniteError, match=r"non-finite observation in env column b=0 at time"):
        sampler.obtain_samples(0)
    decorrelated = SerialSampler(
        Env, {"step_out": _nan_observation}, batch_T=4, batch_B=2, max_decorrelation_steps=50
    )
    with pytest.raises(NonFiniteError, match=r"observation in env column b=\d before the first"):
        decorrelated.initialize(CategoricalPgAgent(), seed=0)


@pytest.mark.parametrize("agent_cls", ["CategoricalPgAgent", "DqnAgent", "R2d1Agent"])
@pytest.mark.parametrize(
    ("space", "shown"),
    [(gym.spaces.MultiDiscrete([2, 3]), "MultiDiscrete"), (gym.spaces.Box(-1, 1, (2,)), "Box")],
)
def test_discrete_action_agents_refuse_other_action_spaces_by_name(agent_cls, space, shown):
    import tdrl.agents

    class Other(Env):
        action_space = space

    sampler = SerialSampler(Other, {}, batch_T=4, batch_B=2)
    with pytest.raises(
        TypeError, match=rf"^{agent_cls} needs a Discrete action space, got {shown}"
    ):
        sampler.initialize(getattr(tdrl.agents, agent_cls)(), seed=0)


@pytest.mark.parametrize("agent_cls", ["SacAgent", "DdpgAgent"])
def test_squashing_agents_refuse_unbounded_actions_instead_of_acting_nan(agent_cls):
    import tdrl.agents

    class Unbounded(Env):
        action_space = gym.spaces.Box(-np.inf, np.inf, (2,))

    sampler = SerialSampler(Unbounded, {}, batch_T=4, batch_B=2)
    with pytest.raises(
        ValueError, match=r"^squashed actions need finite Box bounds, got low=\[-inf, -inf\]"
    ):
        sampler.initialize(getattr(tdrl.agents, agent_cls)(), seed=0)


def test_a_factory_returning_one_env_object_for_every_column_is_refused():
    env = Env()
    with pytest.raises(TypeError, match=r"must build a new env at each call; .* the same Env"):
        SerialSampler(lambda: env, {}, batch_T=4, batch_B=2).initialize(
            CategoricalPgAgent(), seed=0
        )


def test_a_gymnasium_vector_env_is_refused_with_the_two_ways_to_use_it():
    def vector():
        return gym.vector.SyncVectorEnv([Env, Env])

    with pytest.raises(TypeError, match=r"SyncVectorEnv.*one-env factory and batch_B its num_envs"):
        SerialSampler(vector, {}, batch_T=4, batch_B=2).initialize(CategoricalPgAgent(), seed=0)


def test_scalar_box_bounds_get_the_squashing_agents_own_message():
    from tdrl._compat import Bounded
    from tdrl.agents.qpg.base import action_map

    scale, bias = action_map(Bounded(low=-2.0, high=2.0, shape=()))
    assert float(scale) == 2.0 and float(bias) == 0.0
    with pytest.raises(ValueError, match=r"^squashed actions need finite Box bounds"):
        action_map(Bounded(low=float("-inf"), high=2.0, shape=()))


@pytest.mark.parametrize("agent_cls", ["DqnAgent", "CategoricalPgAgent"])
def test_a_given_model_does_not_skip_the_action_space_check(agent_cls):
    import tdrl.agents

    class Other(Env):
        action_space = gym.spaces.MultiDiscrete([2, 3])

    agent = getattr(tdrl.agents, agent_cls)(model=torch.nn.Linear(3, 2))
    sampler = SerialSampler(Other, {}, batch_T=4, batch_B=2)
    with pytest.raises(TypeError, match=rf"^{agent_cls} needs a Discrete action space"):
        sampler.initialize(agent, seed=0)
