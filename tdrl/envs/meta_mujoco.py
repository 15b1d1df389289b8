"""PEARL's MuJoCo task families on gymnasium's MuJoCo v5 models.

Each family wraps a gymnasium v5 env (HalfCheetah, Ant, Humanoid, Hopper, Walker2d),
built directly from its class (no ``gymnasium.make`` wrappers), and adds the
``MultiTaskEnv`` methods of ``tdrl.envs.tasks``. The v5 classes are imported inside the
constructors, so importing this module needs neither MuJoCo nor its bindings.

How a task enters the env:

- **Reward families** (cheetah-vel, cheetah-dir, ant-dir, ant-goal, humanoid-dir) replace
  the v5 reward with oyster's, computed after the v5 step from its ``info``: the
  velocities are v5's ``info["x_velocity"]``/``info["y_velocity"]`` (a finite difference
  of ``qpos[0]`` for the cheetah, of the torso position for the ant, of the centre of mass
  for the humanoid, each over ``dt``), ant-goal's position is ``info["x_position"]``,
  ``info["y_position"]`` (``qpos[0:2]``), and the contact, control and survival terms that
  oyster shares with v5 are taken from v5's ``info["reward_*"]``. The task's own term is
  reported as ``info["reward_task"]``.
- **Rand-params families** (hopper, walker) keep the v5 reward (forward velocity + 1 alive
  - 1e-3‖a‖², the same as rand_param_envs) and write the task's ``body_mass``,
  ``body_inertia``, ``dof_damping`` and ``geom_friction`` into the MuJoCo model. A task
  holds the parameters themselves (as rand_param_envs' ``get_task`` does): the model's
  original values, kept at construction, times per-element multipliers ``1.5**U`` (mass,
  inertia, friction) or ``1.3**U`` (damping), ``U ~ U[-log_scale_limit, log_scale_limit]``.

The task lasts across resets (MuJoCo's reset restores the state, not the model). Every
env truncates its episodes after ``max_episode_steps`` steps (oyster's
``max_path_length``, 200) and terminates them where the v5 env does (falling).
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym
import numpy as np

from tdrl.envs.tasks import Task, as_task, copy_task, draw_without_replacement, task_rng
from tdrl.utils.checks import ArgumentError, check_bool, check_choice, check_int, check_range

#: The model fields a rand-params task sets, with the base of their multipliers.
RAND_PARAM_BASES = {
    "body_mass": 1.5,
    "body_inertia": 1.5,
    "dof_damping": 1.3,
    "geom_friction": 1.5,
}

#: The rand-params robots: the v5 module and class of each.
RAND_PARAM_ROBOTS = {
    "hopper": ("hopper_v5", "HopperEnv"),
    "walker2d": ("walker2d_v5", "Walker2dEnv"),
}


def _make_v5(module: str, cls: str, **kwargs: Any) -> gym.Env[np.ndarray, np.ndarray]:
    """Builds ``gymnasium.envs.mujoco.<module>.<cls>(**kwargs)``, or says what is missing."""
    try:
        env_cls = getattr(importlib.import_module(f"gymnasium.envs.mujoco.{module}"), cls)
    except ImportError as e:
        raise ImportError(f'{cls} needs MuJoCo ({e}); pip install "tdrl[mujoco]"') from e
    env: gym.Env[np.ndarray, np.ndarray] = env_cls(**kwargs)
    return env


class MujocoTaskEnv(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """A v5 MuJoCo env with a task and a step limit: the base of every family here.

    A family sets ``task_keys``, draws tasks in ``_sample`` and applies one in ``_apply``
    (the dynamics) and/or ``_reward`` (the reward).

    Args:
        env: the v5 env (unwrapped).
        max_episode_steps: steps after which an episode is truncated.
        task: the initial task.
    """

    task_keys: tuple[str, ...] = ()

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray], *, max_episode_steps: int, task: Task):
        super().__init__(env)
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps, minimum=1)
        self._elapsed = 0
        self._task: Task = {}
        self.set_task(task)

    def sample_tasks(self, n: int, *, seed: int | None = None) -> list[Task]:
        """``n`` tasks of the family, from ``default_rng(seed)`` or the env's ``np_random``."""
        return self._sample(check_int("n", n, minimum=0), task_rng(self, seed))

    def set_task(self, task: Task) -> None:
        """Makes ``task`` the current task (it lasts across resets)."""
        task = self._check(as_task("task", task, self.task_keys))
        self._apply(task)
        self._task = task

    def get_task(self) -> Task:
        """A copy of the current task."""
        return copy_task(self._task)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Resets the v5 env; the task is kept."""
        self._elapsed = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Steps the v5 env, with the family's reward and the step limit."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._elapsed += 1
        reward = self._reward(float(reward), np.asarray(action, dtype=np.float64), info)
        truncated = bool(truncated) or self._elapsed >= self.max_episode_steps
        return obs, reward, bool(terminated), truncated, info

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        raise NotImplementedError

    def _check(self, task: Task) -> Task:
        return task

    def _apply(self, task: Task) -> None:
        """Writes a task into the model (dynamics families)."""

    def _reward(self, reward: float, action: np.ndarray, info: dict[str, Any]) -> float:
        """The family's reward (default: the v5 reward)."""
        return reward


def _direction(angle: float) -> np.ndarray:
    return np.array([np.cos(angle), np.sin(angle)])


class HalfCheetahVelEnv(MujocoTaskEnv):
    """cheetah-vel: run at a target velocity.

    Task ``{"velocity": v_goal}``, ``v_goal ~ U[0, 3]``. Reward
    ``-|v - v_goal| - 0.05‖a‖²`` with ``v = info["x_velocity"]``.

    Args:
        max_episode_steps: steps per episode (oyster's ``max_path_length``).
        task: the initial task; ``None`` takes ``{"velocity": 1.0}``.
    """

    task_keys = ("velocity",)

    def __init__(self, *, max_episode_steps: int = 200, task: Task | None = None):
        super().__init__(
            _make_v5("half_cheetah_v5", "HalfCheetahEnv"),
            max_episode_steps=max_episode_steps,
            task={"velocity": 1.0} if task is None else task,
        )

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"velocity": float(v)} for v in rng.uniform(0.0, 3.0, size=n)]

    def _reward(self, reward: float, action: np.ndarray, info: dict[str, Any]) -> float:
        task_term = -abs(float(info["x_velocity"]) - self._task["velocity"])
        info["reward_task"] = task_term
        return task_term - 0.05 * float(np.sum(action**2))


class HalfCheetahDirEnv(MujocoTaskEnv):
    """cheetah-dir: run forward or backward.

    Task ``{"direction": ±1}`` (the set ``{-1, 1}``). Reward ``d·v - 0.05‖a‖²`` with
    ``v = info["x_velocity"]``.

    Args:
        max_episode_steps: steps per episode (oyster's ``max_path_length``).
        task: the initial task; ``None`` takes ``{"direction": 1.0}``.
    """

    task_keys = ("direction",)

    def __init__(self, *, max_episode_steps: int = 200, task: Task | None = None):
        super().__init__(
            _make_v5("half_cheetah_v5", "HalfCheetahEnv"),
            max_episode_steps=max_episode_steps,
            task={"direction": 1.0} if task is None else task,
        )

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"direction": d} for d in draw_without_replacement([-1.0, 1.0], n, rng)]

    def _check(self, task: Task) -> Task:
        if task["direction"] not in (-1.0, 1.0):
            raise ArgumentError(f"task['direction'] must be -1 or 1, got {task['direction']}")
        return task

    def _reward(self, reward: float, action: np.ndarray, info: dict[str, Any]) -> float:
        task_term = self._task["direction"] * float(info["x_velocity"])
        info["reward_task"] = task_term
        return task_term - 0.05 * float(np.sum(action**2))


class AntDirEnv(MujocoTaskEnv):
    """ant-dir: run in a direction of the plane.

    Task ``{"angle": θ}``: the set ``{0, π}`` with ``forward_backward=True`` (the paper's
    Ant-Fwd-Back, tdrl's default), else ``θ ~ U[0, 2π]`` (what oyster's ant-dir config
    runs: it leaves its env's ``forward_backward=False``). Reward ``v·(cos θ, sin θ)``
    (torso velocity ``info["x_velocity"], info["y_velocity"]``) plus v5's control (0.5‖a‖²), contact
    (5e-4‖clip(cfrc_ext)‖²) and survival (1) terms, as oyster's.

    Args:
        forward_backward: draw from {0, π} instead of U[0, 2π].
        max_episode_steps: steps per episode (oyster's ``max_path_length``).
        task: the initial task; ``None`` takes ``{"angle": 0.0}``.
    """

    task_keys = ("angle",)

    def __init__(
        self,
        *,
        forward_backward: bool = True,
        max_episode_steps: int = 200,
        task: Task | None = None,
    ):
        self.forward_backward = check_bool("forward_backward", forward_backward)
        super().__init__(
            _make_v5("ant_v5", "AntEnv"),
            max_episode_steps=max_episode_steps,
            task={"angle": 0.0} if task is None else task,
        )

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        if self.forward_backward:
            return [{"angle": a} for a in draw_without_replacement([0.0, np.pi], n, rng)]
        return [{"angle": float(a)} for a in rng.uniform(0.0, 2 * np.pi, size=n)]

    def _reward(self, reward: float, action: np.ndarray, info: dict[str, Any]) -> float:
        velocity = np.array([info["x_velocity"], info["y_velocity"]], dtype=np.float64)
        task_term = float(velocity @ _direction(self._task["angle"]))
        info["reward_task"] = task_term
        return task_term + info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]


class AntGoalEnv(MujocoTaskEnv):
    """ant-goal: walk to a goal in the plane.

    Task ``{"goal": array(2)}``, radius ``3·√U``, angle ``U[0, 2π]``. Reward
    ``-‖p - g‖₁ - 0.1‖a‖²`` plus v5's contact term (5e-4‖clip(cfrc_ext)‖²), no survival
    bonus (oyster's), with ``p = (info["x_position"], info["y_position"])``. The
    observation includes the torso's x, y (as oyster's).

    Args:
        max_episode_steps: steps per episode (oyster's ``max_path_length``).
        task: the initial task; ``None`` takes ``{"goal": [3, 0]}``.
    """

    task_keys = ("goal",)

    def __init__(self, *, max_episode_steps: int = 200, task: Task | None = None):
        super().__init__(
            _make_v5("ant_v5", "AntEnv", exclude_current_positions_from_observation=False),
            max_episode_steps=max_episode_steps,
            task={"goal": np.array([3.0, 0.0])} if task is None else task,
        )

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        angles = rng.uniform(0.0, 2 * np.pi, size=n)
        radii = 3.0 * np.sqrt(rng.uniform(0.0, 1.0, size=n))
        return [{"goal": r * _direction(a)} for r, a in zip(radii, angles, strict=True)]

    def _check(self, task: Task) -> Task:
        if np.shape(task["goal"]) != (2,):
            raise ArgumentError(f"task['goal'] must have shape (2,), got {task['goal']!r}")
        return task

    def _reward(self, reward: float, action: np.ndarray, info: dict[str, Any]) -> float:
        position = np.array([info["x_position"], info["y_position"]], dtype=np.float64)
        task_term = -float(np.sum(np.abs(position - self._task["goal"])))
        info["reward_task"] = task_term
        return task_term - 0.1 * float(np.sum(action**2)) + info["reward_contact"]


class HumanoidDirEnv(MujocoTaskEnv):
    """humanoid-dir: walk in a direction of the plane.

    Task ``{"angle": θ}``, ``θ ~ U[0, 2π]``. Reward ``0.25·v·(cos θ, sin θ)`` (centre-of-
    mass velocity ``info["x_velocity"], info["y_velocity"]``) plus v5's control
    (0.1‖a‖²), contact (5e-7‖cfrc_ext‖², at most 10) and survival (5) terms, as oyster's.

    Args:
        max_episode_steps: steps per episode (oyster's ``max_path_length``).
        task: the initial task; ``None`` takes ``{"angle": 0.0}``.
    """

    task_keys = ("angle",)

    def __init__(self, *, max_episode_steps: int = 200, task: Task | None = None):
        super().__init__(
            _make_v5("humanoid_v5", "HumanoidEnv"),
            max_episode_steps=max_episode_steps,
            task={"angle": 0.0} if task is None else task,
        )

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return [{"angle": float(a)} for a in rng.uniform(0.0, 2 * np.pi, size=n)]

    def _reward(self, reward: float, action: np.ndarray, info: dict[str, Any]) -> float:
        velocity = np.array([info["x_velocity"], info["y_velocity"]], dtype=np.float64)
        task_term = 0.25 * float(velocity @ _direction(self._task["angle"]))
        info["reward_task"] = task_term
        return task_term + info["reward_ctrl"] + info["reward_contact"] + info["reward_survive"]


def sample_rand_params(
    originals: dict[str, np.ndarray], n: int, rng: np.random.Generator, log_scale_limit: float
) -> list[Task]:
    """``n`` rand-params tasks: the originals times per-element ``base**U[-l, l]``."""
    tasks = []
    for _ in range(n):
        task: Task = {}
        for key, value in originals.items():
            exponents = rng.uniform(-log_scale_limit, log_scale_limit, size=value.shape)
            task[key] = value * RAND_PARAM_BASES[key] ** exponents
        tasks.append(task)
    return tasks


class RandParamsEnv(MujocoTaskEnv):
    """hopper-rand-params / walker-rand-params: random mass, inertia, damping, friction.

    Task ``{"body_mass", "body_inertia", "dof_damping", "geom_friction"}``, each an array
    of the model's shape (the parameters themselves; see the module docstring). The
    reward and termination are the v5 env's (the same as rand_param_envs').

    Args:
        robot: ``"hopper"`` (Hopper-v5, hopper-rand-params) or ``"walker2d"``
            (Walker2d-v5, walker-rand-params).
        log_scale_limit: ``l`` in the multipliers ``base**U[-l, l]`` (rand_param_envs: 3).
        max_episode_steps: steps per episode (oyster's ``max_path_length``).
        task: the initial task; ``None`` keeps the model's original parameters.
    """

    task_keys = tuple(RAND_PARAM_BASES)

    def __init__(
        self,
        *,
        robot: str = "hopper",
        log_scale_limit: float = 3.0,
        max_episode_steps: int = 200,
        task: Task | None = None,
    ):
        self.robot = check_choice("robot", robot, RAND_PARAM_ROBOTS)
        self.log_scale_limit = check_range("log_scale_limit", log_scale_limit, 0.0, np.inf)
        env = _make_v5(*RAND_PARAM_ROBOTS[self.robot])
        model = env.unwrapped.model  # type: ignore[attr-defined]
        self._originals = {key: np.array(getattr(model, key)) for key in RAND_PARAM_BASES}
        super().__init__(
            env,
            max_episode_steps=max_episode_steps,
            task=copy_task(self._originals) if task is None else task,
        )

    @property
    def original_params(self) -> Task:
        """A copy of the model's parameters before any task was set."""
        return copy_task(self._originals)

    def _sample(self, n: int, rng: np.random.Generator) -> list[Task]:
        return sample_rand_params(self._originals, n, rng, self.log_scale_limit)

    def _check(self, task: Task) -> Task:
        for key, value in task.items():
            if np.shape(value) != self._originals[key].shape:
                raise ArgumentError(
                    f"task[{key!r}] must have shape {self._originals[key].shape}, "
                    f"got {np.shape(value)}"
                )
        return task

    def _apply(self, task: Task) -> None:
        model = self.env.unwrapped.model  # type: ignore[attr-defined]
        for key, value in task.items():
            getattr(model, key)[:] = value
