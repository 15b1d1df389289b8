"""Multi-task envs for meta-RL (PEARL): the point robots and ``make_meta_env``.

The task interface (``Task``, ``MultiTaskEnv``, ``task_to_json``, ``task_from_json``) is
``tdrl.envs.tasks``, re-exported here. ``make_meta_env(name)`` builds any family by its
oyster name; the MuJoCo families live in ``tdrl.envs.meta_mujoco`` (which imports
``tdrl.envs.tasks``, not this module: the registry here is the only place that knows every
family).

The point robots follow oyster's ``PointEnv``/``SparsePointEnv``: the observation is the
2-D position, an action (clipped to ``Box(-0.1, 0.1, (2,))``) is added to it, the reward
is ``-‖s - g‖`` and an episode ends by truncation after ``max_episode_steps`` steps
(oyster's point-robot config: 20).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from tdrl.envs.meta_mujoco import (
    AntDirEnv,
    AntGoalEnv,
    HalfCheetahDirEnv,
    HalfCheetahVelEnv,
    HumanoidDirEnv,
    RandParamsEnv,
)
from tdrl.envs.tasks import (
    MultiTaskEnv,
    Task,
    as_task,
    copy_task,
    draw_without_replacement,
    task_from_json,
    task_rng,
    task_to_json,
)
from tdrl.utils.checks import ArgumentError, check_choice, check_int, check_range
from tdrl.utils.meta_env_names import META_ENV_NAMES

__all__ = [
    "META_ENV_NAMES",
    "MultiTaskEnv",
    "PointRobotEnv",
    "SparsePointRobotEnv",
    "Task",
    "make_meta_env",
    "task_from_json",
    "task_to_json",
]


class PointRobotEnv(gym.Env[np.ndarray, np.ndarray]):
    """Oyster's point-robot: move a point in the plane towards a goal.

    Task ``{"goal": array(2)}``, goals ~ U[-1, 1]² (oyster's ``randomize_tasks=True``).
    Each episode starts at a position ~ U[-1, 1]² drawn from the env's ``np_random``.
    The observation is the position (float32), the action is clipped to [-0.1, 0.1]² and
    added to it, the reward is ``-‖s - g‖`` (after the move), and the episode is
    truncated after ``max_episode_steps`` steps (never terminated).

    Args:
        max_episode_steps: steps per episode (oyster's point-robot ``max_path_length``).
        task: the initial task; ``None`` takes ``sample_tasks(1, seed=0)[0]``.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium declares it per instance
    task_keys = ("goal",)

    def __init__(self, *, max_episode_steps: int = 20, task: Task | None = None):
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps, minimum=1)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-0.1, 0.1, (2,), np.float32)
        self._state = np.zeros(2)
        self._elapsed = 0
        self._task: Task = {}
        self.set_task(self.sample_tasks(1, seed=0)[0] if task is None else task)

    def sample_tasks(self, n: int, *, seed: int | None = None) -> list[Task]:
        """``n`` goals ~ U[-1, 1]², independently."""
        n = check_int("n", n, minimum=0)
        rng = task_rng(self, seed)
        return [{"goal": rng.uniform(-1.0, 1.0, size=2)} for _ in range(n)]

    def set_task(self, task: Task) -> None:
        """Sets the goal (``task["goal"]``, a 2-vector)."""
        task = as_task("task", task, self.task_keys)
        if np.shape(task["goal"]) != (2,):
            raise ArgumentError(f"task['goal'] must have shape (2,), got {task['goal']!r}")
        self._task = task

    def get_task(self) -> Task:
        """A copy of the current task."""
        return copy_task(self._task)

    def _start(self) -> np.ndarray:
        return self.np_random.uniform(-1.0, 1.0, size=2)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts an episode (the task is kept)."""
        super().reset(seed=seed)
        self._state = self._start()
        self._elapsed = 0
        return self._state.astype(np.float32), {}

    def _info(self, reward: float) -> dict[str, Any]:
        return {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Moves by the clipped action; reward ``-‖s - g‖``."""
        move = np.clip(np.asarray(action, dtype=np.float64), -0.1, 0.1)
        self._state = self._state + move
        self._elapsed += 1
        reward = -float(np.linalg.norm(self._state - self._task["goal"]))
        truncated = self._elapsed >= self.max_episode_steps
        return self._state.astype(np.float32), reward, False, truncated, self._info(reward)


class SparsePointRobotEnv(PointRobotEnv):
    """Oyster's sparse-point-robot: goals on the unit half circle, reward inside a radius.

    Task ``{"goal": array(2)}``. ``sample_tasks(n)`` is oyster's task set for ``n`` tasks:
    ``n`` angles ``linspace(0, π, n)`` on the unit circle, shuffled. Episodes start at the
    origin. ``step`` returns the dense reward ``r = -‖s - g‖`` (as oyster does) and reports
    the sparse one as ``info["sparse_reward"]``, oyster's formula: ``r + 1`` where
    ``r >= -goal_radius`` (so in [1 - goal_radius, 1] inside the radius), else 0.

    Args:
        max_episode_steps: steps per episode (oyster's sparse-point-robot config: 20).
        goal_radius: the distance to the goal within which the sparse reward is paid.
        task: the initial task; ``None`` takes the goal at angle π/2 ``(0, 1)``.
    """

    def __init__(
        self, *, max_episode_steps: int = 20, goal_radius: float = 0.2, task: Task | None = None
    ):
        self.goal_radius = check_range("goal_radius", goal_radius, 0.0, np.inf)
        super().__init__(
            max_episode_steps=max_episode_steps,
            task={"goal": np.array([0.0, 1.0])} if task is None else task,
        )

    def sample_tasks(self, n: int, *, seed: int | None = None) -> list[Task]:
        """The ``n`` goals of oyster's set on the unit half circle, in a shuffled order."""
        n = check_int("n", n, minimum=0)
        rng = task_rng(self, seed)
        angles = np.linspace(0.0, np.pi, num=n)
        goals = [np.array([np.cos(a), np.sin(a)]) for a in angles]
        return [{"goal": g} for g in draw_without_replacement(goals, n, rng)]

    def _start(self) -> np.ndarray:
        return np.zeros(2)

    def sparse_reward(self, reward: float) -> float:
        """The sparse reward for a dense ``r``: ``r + 1`` inside the radius, else 0 (oyster's)."""
        return reward + 1.0 if reward >= -self.goal_radius else 0.0

    def _info(self, reward: float) -> dict[str, Any]:
        return {"sparse_reward": self.sparse_reward(reward)}


def make_meta_env(name: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """Builds a multi-task env by its oyster name.

    Args:
        name: one of ``META_ENV_NAMES``: ``"point-robot"``, ``"sparse-point-robot"``,
            ``"cheetah-vel"``, ``"cheetah-dir"``, ``"ant-dir"``, ``"ant-goal"``,
            ``"humanoid-dir"``, ``"hopper-rand-params"``, ``"walker-rand-params"``.
        **kwargs: the family's keyword arguments (``max_episode_steps``, ``task``, ...).

    Returns:
        A gymnasium env that is a ``MultiTaskEnv``.

    Raises:
        ArgumentError: ``name`` is not a known family.
        ImportError: a MuJoCo family without MuJoCo installed.
    """
    check_choice("name", name, META_ENV_NAMES)
    if name == "point-robot":
        return PointRobotEnv(**kwargs)
    if name == "sparse-point-robot":
        return SparsePointRobotEnv(**kwargs)
    if name == "hopper-rand-params":
        return RandParamsEnv(robot="hopper", **kwargs)
    if name == "walker-rand-params":
        return RandParamsEnv(robot="walker2d", **kwargs)
    families: dict[str, type[gym.Env[Any, Any]]] = {
        "cheetah-vel": HalfCheetahVelEnv,
        "cheetah-dir": HalfCheetahDirEnv,
        "ant-dir": AntDirEnv,
        "ant-goal": AntGoalEnv,
        "humanoid-dir": HumanoidDirEnv,
    }
    return families[name](**kwargs)
