"""CartPole as one TorchRL env of batch size ``[N]``: N carts stepped by tensor operations.

GPU simulators hand a learner thousands of environments stepped as one batch; this is the
smallest such env, written in torch so it runs on any device. Its physics is gymnasium's
``CartPole-v1`` (Barto, Sutton and Anderson 1983, as in ``gymnasium/envs/classic_control/
cartpole.py``), for all N carts at once. With state ``s = (x, x_dot, theta, theta_dot)``
and action ``a`` in {0, 1} (push left, push right):

.. code-block:: text

    F        = +force_mag if a == 1 else -force_mag
    temp     = (F + m_p l theta_dot^2 sin theta) / (m_c + m_p)
    theta_dd = (g sin theta - cos theta temp) / (l (4/3 - m_p cos^2 theta / (m_c + m_p)))
    x_dd     = temp - m_p l theta_dd cos theta / (m_c + m_p)
    s'       = s + tau (x_dot, x_dd, theta_dot, theta_dd)          (explicit Euler)

with g = 9.8, m_c = 1.0, m_p = 0.1, l = 0.5 (half the pole), force_mag = 10, tau = 0.02.
An episode is **terminated** when ``|x'| > 2.4`` or ``|theta'| > 12 degrees``, and
**truncated** when its step counter reaches ``max_episode_steps`` (gymnasium's
``TimeLimit``: both can hold at once); the reward is 1 for every step, the failing one
included. A reset draws each state entry from U(-0.05, 0.05).

**State.** The env is stateful, like a gymnasium env or a GPU simulator: it holds the
``[N, 4]`` physics state and an ``[N]`` step counter, and ``_step`` reads only the
``action`` of its input. The physics runs in ``dtype``: float32 by default, float64 being
gymnasium's own precision (the constants are folded differently from gymnasium's code, so
float64 agrees with it to rounding, ~1e-15). Observations are float32. Every step and reset
makes new tensors (nothing is updated in place), so an observation handed out never changes.
Stepping an env that is done without resetting it continues its physics (gymnasium calls
that undefined behaviour); the reward stays 1.

**Partial resets.** ``reset(td)`` with a ``"_reset"`` entry (``[N, 1]`` bool, TorchRL's
convention, which ``step_and_maybe_reset`` and the collectors use) resets only the marked
envs; the others keep their state and step counter. With ``sync_free`` (the default on
CUDA) a reset draws all N rows and selects them with ``torch.where``, so neither a step nor
a reset makes the device wait for the host; on the CPU it draws only the marked rows, which
is cheaper (a CPU random draw costs more than the physics of a step).
``reset(td, set_state=True)`` starts the marked envs from ``td["observation"]`` instead of
a random draw (the tests start gymnasium and this env from one state that way).

**Seeding.** Random draws come from a ``torch.Generator`` on the env's device: the same
seed (``seed=`` or ``set_seed``), device and ``sync_free`` give the same episodes. Without
a seed, the generator is seeded from torch's global generator, so ``torch.manual_seed``
makes a run reproducible.

``cartpole_step`` is the dynamics as a plain function of tensors, for loops that step the
physics without TorchRL's ``EnvBase.step`` (``benchmarks/vector_env.py`` measures both).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDictBase

from tdrl import keys
from tdrl._compat import Bounded, Categorical, Composite, EnvBase, Unbounded
from tdrl._compat import tensordict_from_trusted as _trusted
from tdrl.utils.checks import ArgumentError, check_bool, check_int
from tdrl.utils.device import check_device

GRAVITY = 9.8
MASS_CART = 1.0
MASS_POLE = 0.1
TOTAL_MASS = MASS_POLE + MASS_CART
LENGTH = 0.5  # half the pole's length
POLE_MASS_LENGTH = MASS_POLE * LENGTH
FORCE_MAG = 10.0
TAU = 0.02  # seconds between state updates
THETA_THRESHOLD = 12 * 2 * math.pi / 360  # radians
X_THRESHOLD = 2.4
RESET_BOUND = 0.05  # a reset draws every state entry from U(-RESET_BOUND, RESET_BOUND)

#: The observation bounds of gymnasium's space: twice the termination thresholds.
OBSERVATION_HIGH = (2 * X_THRESHOLD, math.inf, 2 * THETA_THRESHOLD, math.inf)


@functools.cache
def _constants(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """``-F / (m_c + m_p)`` and ``4/3 l`` as tensors on ``device`` (once per device, dtype).

    Tensors, not Python numbers, can be the first operand of ``addcmul``.
    """
    return (
        torch.tensor(-FORCE_MAG / TOTAL_MASS, dtype=dtype, device=device),
        torch.tensor(4.0 / 3.0 * LENGTH, dtype=dtype, device=device),
    )


def cartpole_step(state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of CartPole for a batch of carts (gymnasium's ``CartPole-v1`` physics).

    The module docstring gives the equations; here the constants are folded so that a step
    costs about 20 tensor operations, whatever the batch size (on a CPU their fixed cost, a
    few microseconds each, is most of a step up to N of about a thousand). The step is
    differentiable in ``state``.

    Args:
        state: ``[..., 4]`` floats: cart position, cart velocity, pole angle, pole angular
            velocity.
        action: ``[...]`` integers or bools: 1 pushes right, 0 pushes left.

    Returns:
        ``(next_state, terminated)``: a new ``[..., 4]`` tensor in ``state``'s dtype, and a
        ``[...]`` bool tensor, True where the cart left ``[-2.4, 2.4]`` or the pole fell
        past 12 degrees.
    """
    minus_push, four_thirds_l = _constants(state.device, state.dtype)
    _, x_dot, theta, theta_dot = state.unbind(-1)
    cos, sin = theta.cos(), theta.sin()
    # temp = F / (m_c + m_p) + m_p l theta_dot^2 sin / (m_c + m_p), F = +-force_mag
    temp = torch.addcmul(minus_push, theta_dot.square(), sin, value=POLE_MASS_LENGTH / TOTAL_MASS)
    temp = temp.add_(action.to(state.dtype), alpha=2 * FORCE_MAG / TOTAL_MASS)
    theta_acc = torch.addcmul(sin.mul(GRAVITY), cos, temp, value=-1.0).div_(
        torch.addcmul(four_thirds_l, cos, cos, value=-LENGTH * MASS_POLE / TOTAL_MASS)
    )
    x_acc = torch.addcmul(temp, theta_acc, cos, value=-POLE_MASS_LENGTH / TOTAL_MASS)
    next_state = torch.add(state, torch.stack((x_dot, x_acc, theta_dot, theta_acc), -1), alpha=TAU)
    x, theta = next_state[..., 0], next_state[..., 2]
    terminated = (x.abs() > X_THRESHOLD) | (theta.abs() > THETA_THRESHOLD)
    return next_state, terminated


@dataclass
class _Carts:
    """The physics state ``[N, 4]`` and the steps since each env's reset ``[N]``.

    A plain holder: assigning a tensor attribute of a ``torch.nn.Module`` (``EnvBase`` is
    one) costs ~2.6 us here, against ~0.05 us on this dataclass, four times a step.
    """

    state: torch.Tensor
    steps: torch.Tensor


class VectorCartPole(EnvBase):
    """N CartPole-v1 envs as one TorchRL env of batch size ``[num_envs]`` (see the module).

    Keys and shapes (N = ``num_envs``): ``action`` ``[N]`` int64 in {0, 1}
    (``Categorical(2)``); ``observation`` ``[N, 4]`` float32; ``reward`` ``[N, 1]``
    float32; ``done``, ``terminated``, ``truncated`` ``[N, 1]`` bool.

    Args:
        num_envs: N, the number of carts (>= 1).
        device: where the state lives and the physics runs (``"cpu"``, ``"cuda"``, ...);
            default ``"cpu"``.
        max_episode_steps: steps after which an episode is truncated (CartPole-v1: 500);
            None for no time limit.
        seed: seed of the env's random generator; None seeds it from torch's global
            generator.
        dtype: precision of the physics state, ``torch.float32`` (default) or
            ``torch.float64`` (gymnasium's); observations are float32 either way.
        sync_free: resets draw all N rows and select the reset ones with ``torch.where``
            (no device-to-host synchronisation) instead of drawing only the reset rows;
            None (default): True on every device but the CPU.

    Raises:
        ArgumentError: (one line, naming the argument) ``num_envs`` below 1, a device that
            is not one or does not exist here, a bad ``max_episode_steps``, ``seed``,
            ``dtype`` or ``sync_free``.

    Example:
        >>> env = VectorCartPole(4096, seed=0)
        >>> td = env.reset()
        >>> td["action"] = env.action_spec.rand()
        >>> transition, td = env.step_and_maybe_reset(td)
    """

    _supports_set_state = True

    def __init__(
        self,
        num_envs: int,
        *,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 500,
        seed: int | None = None,
        dtype: torch.dtype = torch.float32,
        sync_free: bool | None = None,
    ):
        num_envs = check_int("num_envs", num_envs, minimum=1)
        device = check_device("device", device) or torch.device("cpu")
        if max_episode_steps is not None:
            max_episode_steps = check_int("max_episode_steps", max_episode_steps, minimum=1)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        if dtype not in (torch.float32, torch.float64):
            raise ArgumentError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        if sync_free is None:
            sync_free = device.type != "cpu"
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.num_envs = num_envs
        self.max_episode_steps = max_episode_steps
        self.dtype = dtype
        self.sync_free = check_bool("sync_free", sync_free)
        self._make_specs()
        self._generator = torch.Generator(device=self.device)  # "cuda" is now "cuda:0"
        self._carts = _Carts(
            torch.zeros(num_envs, 4, dtype=dtype, device=self.device),
            torch.zeros(num_envs, dtype=torch.int64, device=self.device),
        )
        self._set_seed(seed)

    def _make_specs(self) -> None:
        n, device = self.num_envs, self.device
        high = torch.tensor(OBSERVATION_HIGH, dtype=torch.float32).expand(n, 4)
        self.observation_spec = Composite(
            {keys.OBSERVATION: Bounded(-high, high, shape=(n, 4), dtype=torch.float32)},
            shape=(n,),
            device=device,
        )
        self.action_spec = Categorical(2, shape=(n,), dtype=torch.int64, device=device)
        self.reward_spec = Unbounded(shape=(n, 1), dtype=torch.float32, device=device)
        done = Categorical(2, shape=(n, 1), dtype=torch.bool, device=device)
        self.done_spec = Composite(
            {keys.DONE: done, keys.TERMINATED: done.clone(), keys.TRUNCATED: done.clone()},
            shape=(n,),
            device=device,
        )

    def to(self, device: str | torch.device) -> VectorCartPole:
        """``self`` when ``device`` is the env's own; the state and generator cannot move.

        Raises:
            ArgumentError: another device (build the env with ``device=`` instead).
        """
        target = check_device("device", device)
        if target is not None and target.type == "cuda" and target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
        if target != self.device:
            raise ArgumentError(
                f"VectorCartPole cannot move from {self.device} to {device!r}: build it with "
                f"device={str(device)!r} instead"
            )
        return self

    @property
    def state(self) -> torch.Tensor:
        """A copy of the ``[N, 4]`` physics state, in ``dtype``."""
        return self._carts.state.clone()

    @property
    def elapsed_steps(self) -> torch.Tensor:
        """A copy of the ``[N]`` steps taken since each env's last reset."""
        return self._carts.steps.clone()

    def _set_seed(self, seed: int | None) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self._generator.manual_seed(seed)

    def _observation(self, state: torch.Tensor) -> torch.Tensor:
        return state if state.dtype == torch.float32 else state.to(torch.float32)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        n, carts = self.num_envs, self._carts
        action = tensordict.get(keys.ACTION).reshape(n)
        state, terminated = cartpole_step(carts.state, action)
        steps = carts.steps + 1
        reward = torch.ones(n, 1, dtype=torch.float32, device=self.device)
        moved = tensordict.get("_step", None)  # TorchRL's partial step: the others stay
        if moved is not None:
            moved = moved.reshape(n)
            state = torch.where(moved.unsqueeze(-1), state, carts.state)
            steps = torch.where(moved, steps, carts.steps)
            terminated = terminated & moved
            reward = reward * moved.unsqueeze(-1)
        carts.state, carts.steps = state, steps
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = steps >= self.max_episode_steps
            if moved is not None:
                truncated = truncated & moved
        terminated, truncated = terminated.unsqueeze(-1), truncated.unsqueeze(-1)
        out = {
            keys.OBSERVATION: self._observation(state),
            keys.REWARD: reward,
            keys.DONE: terminated | truncated,
            keys.TERMINATED: terminated,
            keys.TRUNCATED: truncated,
        }
        return _trusted(out, (n,), self.device)

    def _reset(
        self, tensordict: TensorDictBase | None = None, *, set_state: bool = False, **_: Any
    ) -> TensorDictBase:
        n, carts = self.num_envs, self._carts
        given = None
        if set_state:
            given = None if tensordict is None else tensordict.get(keys.OBSERVATION, None)
            if given is None:
                raise KeyError(
                    f"reset(set_state=True) needs an {keys.OBSERVATION!r} entry of shape "
                    f"[{n}, 4] to start the envs from"
                )
            given = given.to(self.device, self.dtype).reshape(n, 4)
        mask = None if tensordict is None else tensordict.get("_reset", None)
        if mask is None:
            carts.state = given if given is not None else self._draw(n)
            carts.steps = torch.zeros_like(carts.steps)
        elif self.sync_free:
            mask = mask.reshape(n)
            fresh = given if given is not None else self._draw(n)
            carts.state = torch.where(mask.unsqueeze(-1), fresh, carts.state)
            carts.steps = torch.where(mask, 0, carts.steps)
        else:
            rows = mask.reshape(n).nonzero().squeeze(-1)
            fresh = given[rows] if given is not None else self._draw(rows.numel())
            carts.state = carts.state.index_put((rows,), fresh)
            carts.steps = carts.steps.index_fill(0, rows, 0)
        done = torch.zeros(3, n, 1, dtype=torch.bool, device=self.device)
        out = {
            keys.OBSERVATION: self._observation(carts.state),
            keys.DONE: done[0],
            keys.TERMINATED: done[1],
            keys.TRUNCATED: done[2],
        }
        return _trusted(out, (n,), self.device)

    def _draw(self, rows: int) -> torch.Tensor:
        """``[rows, 4]`` initial states, each entry from U(-RESET_BOUND, RESET_BOUND)."""
        fresh = torch.empty(rows, 4, dtype=self.dtype, device=self.device)
        return fresh.uniform_(-RESET_BOUND, RESET_BOUND, generator=self._generator)
