"""Bad input is refused clearly, early and honestly (the CLI's cases are in test_examples.py,
the launcher's in test_launch.py, the environments' in test_envs.py).

* A sweep over every public constructor (algorithms, agents, samplers, runners, replay
  buffers, affinity, AtariEnv), found by introspecting their signatures: each numeric
  argument given NaN, an infinity, a string, a bool, a list, 0 or -1 where those are
  invalid, or a non-whole float where an int is expected, is refused at construction with a
  one-line error naming it; whole floats (rlpyt's ``1e6``) are accepted where an int is.
  A second sweep gives the other kinds of argument (switches, dicts, models, classes,
  callables, choices) values of the wrong type.
* Every algorithm refuses every agent kind it cannot train, naming what it needs.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tdrl.agents import (
    CategoricalPgAgent,
    DdpgAgent,
    DqnAgent,
    GaussianPgAgent,
    R2d1Agent,
    SacAgent,
    SacVAgent,
    Td3Agent,
)
from tdrl.agents.qpg.pearl_agent import PearlAgent
from tdrl.algos import (
    A2C,
    DDPG,
    DQN,
    PPO,
    R2D1,
    SAC,
    SAC_V,
    TD3,
    CategoricalDQN,
    rainbow_minus_noisy,
)
from tdrl.algos.qpg.pearl import PEARL
from tdrl.envs import AtariEnv, make_meta_env
from tdrl.keys import BatchSpec
from tdrl.launch import make_affinity
from tdrl.replays import (
    FrameReplayBuffer,
    PrioritizedSampler,
    ReplayBuffer,
    ReplayConfig,
    SumTree,
    UniformSampler,
)
from tdrl.replays.multi_task import MultiTaskReplay
from tdrl.replays.sequence import SequenceReplayBuffer
from tdrl.replays.sequence_frame import SequenceFrameReplayBuffer
from tdrl.runners import AsyncRl, AsyncRlEval, MinibatchRl, MinibatchRlEval, SyncRl, SyncRlEval
from tdrl.runners.meta_rl import MetaRl
from tdrl.samplers import AlternatingSampler, CpuSampler, GpuSampler, SerialSampler
from tdrl.samplers.collector import CollectorSampler
from tdrl.samplers.episodes import EpisodeSampler
from tdrl.testing import CountingEnv
from tdrl.utils.checks import ArgumentError


def _sampler(**kwargs: Any) -> SerialSampler:
    kw = {"batch_T": 2, "batch_B": 2, "eval_n_envs": 1, "eval_max_steps": 10, **kwargs}
    return SerialSampler(CountingEnv, {}, **kw)


def _runner(cls: type, **extra: Any) -> Callable[..., Any]:
    def make(**kwargs: Any) -> Any:
        return cls(PPO(), CategoricalPgAgent(), _sampler(), **{"n_steps": 8, **extra, **kwargs})

    return make


def _parallel(cls: type) -> Callable[..., Any]:
    return lambda **kw: cls(CountingEnv, {}, **{"batch_T": 2, "batch_B": 2, **kw})


#: Every public constructor, built from its required arguments plus the swept keyword.
CONSTRUCTORS: dict[str, Callable[..., Any]] = {
    "A2C": A2C,
    "PPO": PPO,
    "DQN": DQN,
    "CategoricalDQN": CategoricalDQN,
    "DDPG": DDPG,
    "TD3": TD3,
    "SAC": SAC,
    "SAC_V": SAC_V,
    "rainbow_minus_noisy": rainbow_minus_noisy,
    "CategoricalPgAgent": CategoricalPgAgent,
    "GaussianPgAgent": GaussianPgAgent,
    "DqnAgent": DqnAgent,
    "DdpgAgent": DdpgAgent,
    "Td3Agent": Td3Agent,
    "SacAgent": SacAgent,
    "SacVAgent": SacVAgent,
    "SerialSampler": lambda **kw: SerialSampler(
        CountingEnv, {}, **{"batch_T": 2, "batch_B": 2, **kw}
    ),
    "CpuSampler": _parallel(CpuSampler),
    "GpuSampler": _parallel(GpuSampler),
    "AlternatingSampler": _parallel(AlternatingSampler),
    "MinibatchRl": _runner(MinibatchRl),
    "MinibatchRlEval": _runner(MinibatchRlEval),
    "AsyncRl": _runner(AsyncRl),
    "AsyncRlEval": _runner(AsyncRlEval),
    "SyncRl": _runner(SyncRl, world_size=1),
    "SyncRlEval": _runner(SyncRlEval, world_size=1),
    "ReplayConfig": lambda **kw: ReplayConfig(
        **{"batch_size": 4, "min_steps_learn": 0, "replay_size": 64, "replay_ratio": 1.0, **kw}
    ),
    "ReplayBuffer": lambda **kw: ReplayBuffer(**{"size": 64, "batch_B": 2, **kw}),
    "FrameReplayBuffer": lambda **kw: FrameReplayBuffer(**{"size": 64, "batch_B": 2, **kw}),
    "UniformSampler": lambda **kw: UniformSampler(**{"capacity": 8, **kw}),
    "PrioritizedSampler": lambda **kw: PrioritizedSampler(**{"capacity": 8, **kw}),
    "SumTree": lambda **kw: SumTree(**{"capacity": 8, **kw}),
    "make_affinity": make_affinity,
    "AtariEnv": AtariEnv,
    # The newer surfaces (issue 20): recurrent replay, R2D1, PEARL and its runner, samplers.
    "R2D1": R2D1,
    "R2d1Agent": R2d1Agent,
    "PEARL": PEARL,
    "PearlAgent": PearlAgent,
    "SequenceReplayBuffer": lambda **kw: SequenceReplayBuffer(
        **{"size": 64, "batch_B": 2, "batch_T": 4, **kw}
    ),
    "SequenceFrameReplayBuffer": lambda **kw: SequenceFrameReplayBuffer(
        **{"size": 64, "batch_B": 2, "batch_T": 4, **kw}
    ),
    "MultiTaskReplay": lambda **kw: MultiTaskReplay(
        **{"n_tasks": 2, "size": 64, "batch_B": 1, "encoder_size": 16, **kw}
    ),
    "EpisodeSampler": lambda **kw: EpisodeSampler(make_meta_env, {"name": "point-robot"}, **kw),
    "CollectorSampler": lambda **kw: CollectorSampler(
        **{"env_fn": "CartPole-v1", "batch_T": 2, "batch_B": 2, **kw}
    ),
    "MetaRl": lambda **kw: MetaRl(
        PEARL(), PearlAgent(), **{"env_name": "point-robot", "n_iterations": 1, **kw}
    ),
}

#: Arguments for which 0 is a valid value (everything else numeric must be positive).
ZERO_OK = {
    "discount",
    "learning_rate",
    "q_learning_rate",
    "value_loss_coeff",
    "entropy_loss_coeff",
    "clip_grad_norm",
    "gae_lambda",
    "ratio_clip",
    "min_steps_learn",
    "pri_alpha",
    "pri_beta_init",
    "pri_beta_final",
    "V_min",
    "V_max",
    "q_target_clip",
    "target_noise_std",
    "fixed_alpha",
    "reward_scale",
    "target_entropy",
    "policy_output_regularization",
    "eps_init",
    "eps_final",
    "eps_eval",
    "action_std",
    "pretrain_std",
    "log_std_min",
    "log_std_max",
    "max_decorrelation_steps",
    "eval_n_envs",
    "seed",
    "alpha",
    "beta",
    "eps",
    "beta_final",
    "n_gpu",
    "cpu_reserved",
    "hyperthread_offset",
    "sample_gpu_per_run",
    "run_slot",
    "max_start_noops",
    "repeat_action_probability",
    "warmup_T",
    "store_rnn_state_interval",
    "rnn_state_interval",
    "pri_eta",
    "input_priority_shift",
    "value_scale_eps",
    "kl_lambda",
    "policy_mean_reg",
    "policy_std_reg",
    "policy_lr",
    "q_lr",
    "v_lr",
    "context_lr",
    "env_rank",
    "num_tasks_sample",
    "num_steps_posterior",
    "num_extra_rl_steps_posterior",
    "num_train_steps_per_itr",
}
#: Arguments of one constructor for which 0 is valid (another's must be positive).
ZERO_OK_IN = {
    ("SequenceReplayBuffer", "n_step_return"),  # no extra rows: sequences without n-step
    ("SequenceFrameReplayBuffer", "n_step_return"),
    ("DdpgAgent", "ou_theta"),  # no mean reversion: the noise is a random walk
    ("Td3Agent", "ou_theta"),
}
#: Arguments for which -1 is a valid value.
NEGATIVE_OK = {"V_min", "V_max", "target_entropy", "log_std_min", "log_std_max"}
#: Gaps left in modules outside this test's area, with the change that closes each.
KNOWN_GAPS: dict[tuple[str, str], str] = {}
#: A valid whole float for int arguments without a numeric default.
WHOLE_FLOAT = {
    "n_atoms": 51.0,
    "n_workers": 2.0,
    "world_size": 1.0,
    "seed": 3.0,
    "batch_T": 2.0,
    "batch_B": 2.0,
    "n_steps": 8.0,
    "capacity": 8.0,
    "size": 64.0,
    "batch_size": 4.0,
    "min_steps_learn": 0.0,
    "replay_size": 64.0,
    "eval_max_steps": 10.0,
    "eval_max_trajectories": 3.0,
    "max_sampler_lead_itrs": 1.0,
    "beta_steps": 100.0,
    "n_tasks": 2.0,
    "encoder_size": 16.0,
    "input_priority_shift": 2.0,
}


def _parameters(ctor: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments of a constructor (its class's ``__init__`` for classes)."""
    fn = CONSTRUCTORS[ctor]
    target = globals().get(ctor, fn)
    target = target.__init__ if isinstance(target, type) else target
    return {n: p for n, p in inspect.signature(target).parameters.items() if n != "self"}


def _numeric(param: inspect.Parameter) -> str | None:
    """``"int"`` or ``"float"`` if the parameter takes a number (optionally None)."""
    annotation = param.annotation
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", str(annotation))
    parts = {p.strip() for p in annotation.split("|")}
    if not parts <= {"int", "float", "None"}:
        return None
    return "float" if "float" in parts else ("int" if "int" in parts else None)


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for ctor in CONSTRUCTORS:
        for param in _parameters(ctor).values():
            kind = _numeric(param)
            if kind is not None:
                cases.append((ctor, param.name, kind))
    return cases


CASES = _cases()


def test_the_sweep_covers_every_constructor():
    swept = {ctor for ctor, _, _ in CASES}
    assert swept == set(CONSTRUCTORS) - {"CategoricalPgAgent", "GaussianPgAgent"}
    assert len(CASES) > 150


def _refused(ctor: str, name: str, value: Any) -> str:
    with pytest.raises((ValueError, TypeError)) as info:
        CONSTRUCTORS[ctor](**{name: value})
    message = str(info.value)
    assert name in message, f"{ctor}({name}={value!r}): {message}"
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(("ctor", "name", "kind"), CASES, ids=[f"{c}-{n}" for c, n, _ in CASES])
def test_every_numeric_argument_is_checked(ctor, name, kind, request):
    if (ctor, name) in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[(ctor, name)]))
    for value in (math.nan, math.inf, -math.inf, "3", True, [1]):
        _refused(ctor, name, value)
    if name not in ZERO_OK and (ctor, name) not in ZERO_OK_IN:
        _refused(ctor, name, 0)
    if name not in NEGATIVE_OK:
        _refused(ctor, name, -1)
    if kind == "int":
        _refused(ctor, name, 1.5)
        default = _parameters(ctor)[name].default
        numeric = isinstance(default, int) and not isinstance(default, bool)
        whole = float(default) if numeric else WHOLE_FLOAT[name]
        CONSTRUCTORS[ctor](**{name: whole})  # rlpyt's 1e6 for an int: accepted


#: Bad values for each kind of non-numeric argument, by its annotation.
BAD_BY_ANNOTATION: dict[str, tuple[Any, ...]] = {
    "bool": ("yes", 2, math.nan, None),
    "bool | None": ("yes", 2, math.nan),
    "dict[str, Any] | None": ([("a", 1)], "a=1"),
    "dict[str, Any]": ([("a", 1)], "a=1"),
    "nn.Module | None": ("mlp", 3, torch.zeros(2)),
    "type[torch.optim.Optimizer]": ("torch.optim.SGD", 3),
    "type[TrajInfo]": ("TrajInfo", dict, 3),
    "Callable[..., Any]": ("CartPole-v1", 3),
    "str | torch.device | None": (3, "nodevice"),
}
#: String arguments with a fixed set of values.
CHOICES = {"replay_storage", "storage", "action_prior"}


def _other_cases() -> list[tuple[str, str, tuple[Any, ...]]]:
    cases = []
    for ctor in CONSTRUCTORS:
        for name, param in _parameters(ctor).items():
            annotation = str(param.annotation)
            if annotation in BAD_BY_ANNOTATION:
                cases.append((ctor, name, BAD_BY_ANNOTATION[annotation]))
            elif name in CHOICES:
                cases.append((ctor, name, ("nope", 3, None)))
    return cases


OTHER_CASES = _other_cases()


def test_the_other_sweep_covers_every_kind():
    kinds = {str(_parameters(c)[n].annotation) for c, n, _ in OTHER_CASES}
    assert kinds >= set(BAD_BY_ANNOTATION)
    assert len(OTHER_CASES) > 80


@pytest.mark.parametrize(
    ("ctor", "name", "values"), OTHER_CASES, ids=[f"{c}-{n}" for c, n, _ in OTHER_CASES]
)
def test_every_other_argument_is_checked(ctor, name, values):
    for value in values:
        _refused(ctor, name, value)


# ----------------------------------------------------------------------------- agent fit
AGENTS: dict[str, Callable[[], Any]] = {
    "CategoricalPgAgent": CategoricalPgAgent,
    "GaussianPgAgent": GaussianPgAgent,
    "DqnAgent": DqnAgent,
    "DqnAgent(n_atoms=51)": lambda: DqnAgent(n_atoms=51),
    "DdpgAgent": DdpgAgent,
    "Td3Agent": Td3Agent,
    "SacAgent": SacAgent,
    "SacVAgent": SacVAgent,
    "a string": lambda: "agent",
}
#: Each algorithm, the agents it trains, and a word its message must name.
FITS: dict[str, tuple[Callable[[], Any], set[str], str]] = {
    "A2C": (A2C, {"CategoricalPgAgent", "GaussianPgAgent"}, "CategoricalPgAgent"),
    "PPO": (PPO, {"CategoricalPgAgent", "GaussianPgAgent"}, "CategoricalPgAgent"),
    "DQN": (DQN, {"DqnAgent"}, "DqnAgent"),
    "CategoricalDQN": (CategoricalDQN, {"DqnAgent(n_atoms=51)"}, "n_atoms"),
    "DDPG": (DDPG, {"DdpgAgent", "Td3Agent"}, "DdpgAgent"),
    "TD3": (TD3, {"Td3Agent"}, "Td3Agent"),
    "SAC": (SAC, {"SacAgent"}, "SacAgent"),
    "SAC_V": (SAC_V, {"SacVAgent"}, "SacVAgent"),
}
MISFITS = [(a, g) for a, (_, fit, _) in FITS.items() for g in AGENTS if g not in fit]


@pytest.mark.parametrize(("algo", "agent"), MISFITS, ids=[f"{a}-{g}" for a, g in MISFITS])
def test_every_algorithm_refuses_every_agent_it_cannot_train(algo, agent):
    make_algo, _, wanted = FITS[algo]
    given = AGENTS[agent]()
    with pytest.raises(TypeError) as info:
        make_algo().initialize(given, n_itr=1, batch_spec=BatchSpec(2, 2))
    message = str(info.value)
    assert "\n" not in message
    assert f"{algo} needs" in message and wanted in message, message
    names = {type(given).__name__, agent}  # Td3Agent is a DdpgAgent, SacVAgent a SacAgent
    assert any(f"got {n}" in message or f"got a {n}" in message for n in names), message


def test_sac_target_entropy_is_auto_or_a_finite_number():
    assert SAC(target_entropy="auto").target_entropy == "auto"
    assert SAC(target_entropy=-3).target_entropy == -3.0
    for value in (math.nan, math.inf, "high", None, True):
        _refused("SAC", "target_entropy", value)


def test_rainbow_kwargs_must_be_mappings():
    with pytest.raises(ArgumentError, match="algo_kwargs must be a dict"):
        rainbow_minus_noisy(algo_kwargs=[("learning_rate", 1e-4)])
    with pytest.raises(ArgumentError, match=r"agent_kwargs\['model_kwargs'\] must be a dict"):
        rainbow_minus_noisy(agent_kwargs={"model_kwargs": "dueling"})
    with pytest.raises(TypeError, match="unexpected keyword argument 'lr'"):
        rainbow_minus_noisy(algo_kwargs={"lr": 1e-4})


def test_atari_frame_shape_takes_whole_numbers_only():
    assert AtariEnv(frame_shape=(84.0, 84.0)).frame_shape == (84, 84)
    for shape in ((104.5, 80), ("104", 80), (104,), None):
        _refused("AtariEnv", "frame_shape", shape)


@pytest.mark.parametrize("what", ["algo", "agent", "sampler"])
def test_a_class_given_for_an_instance_is_named(what):
    from tdrl.agents import CategoricalPgAgent
    from tdrl.algos import PPO
    from tdrl.runners import MinibatchRl
    from tdrl.samplers import SerialSampler

    parts = {
        "algo": PPO(),
        "agent": CategoricalPgAgent(),
        "sampler": SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=4, batch_B=2),
    }
    parts[what] = type(parts[what])
    with pytest.raises(ArgumentError, match=rf"^{what} must be an instance.* the class "):
        MinibatchRl(**parts, n_steps=8)


def test_model_kwargs_the_default_model_does_not_take_are_named():
    from tdrl.agents import CategoricalPgAgent
    from tdrl.samplers import SerialSampler

    sampler = SerialSampler(env_kwargs={"id": "CartPole-v1"}, batch_T=4, batch_B=2)
    agent = CategoricalPgAgent(model_kwargs={"hidden": 5})
    with pytest.raises(
        ArgumentError, match=r"^model_kwargs=\{'hidden': 5\} of CategoricalPgAgent: "
    ):
        sampler.initialize(agent, seed=0)
