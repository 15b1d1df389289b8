"""Multi-task envs (tdrl.envs.meta, tdrl.envs.meta_mujoco): interface and task effects."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from tdrl.envs import MultiTaskEnv, make_meta_env
from tdrl.envs.meta import META_ENV_NAMES, task_from_json, task_to_json
from tdrl.utils.checks import ArgumentError

MUJOCO_FAMILIES = [n for n in META_ENV_NAMES if "point-robot" not in n]
needs_mujoco = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None, reason="needs MuJoCo")
FAMILIES = [
    pytest.param(n, marks=needs_mujoco) if n in MUJOCO_FAMILIES else n for n in META_ENV_NAMES
]
MJ = needs_mujoco
#: The families whose tasks come from a finite set, and that set (as JSON).
FINITE_SETS = {"cheetah-dir": {-1.0, 1.0}, "ant-dir": {0.0, float(np.pi)}}


def _json(tasks):
    return json.dumps([task_to_json(t) for t in tasks])


def _rollout(env, actions, seed=0):
    obs, _ = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], []
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            break
    return np.array(observations), np.array(rewards), infos


def _actions(env, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(env.action_space.low, env.action_space.high, (n, *env.action_space.shape))


# --------------------------------------------------------------------- interface, all families
@pytest.mark.parametrize("name", FAMILIES)
def test_interface(name):
    env = make_meta_env(name)
    assert isinstance(env, MultiTaskEnv)
    tasks = env.sample_tasks(8, seed=3)
    assert len(tasks) == 8
    assert _json(tasks) == _json(env.sample_tasks(8, seed=3)), "not reproducible under a seed"
    assert _json(tasks) != _json(env.sample_tasks(8, seed=4)), "the same under two seeds"
    env.reset(seed=0)
    assert len(env.sample_tasks(2)) == 2  # from the env's own np_random
    assert env.sample_tasks(0, seed=0) == []

    env.set_task(tasks[1])
    assert _json([env.get_task()]) == _json([tasks[1]])
    got = env.get_task()
    for value in got.values():  # a copy: changing it changes nothing
        if isinstance(value, np.ndarray):
            value *= 2.0
    assert _json([env.get_task()]) == _json([tasks[1]])
    env.reset(seed=1)
    assert _json([env.get_task()]) == _json([tasks[1]]), "reset changed the task"

    text = json.dumps(task_to_json(tasks[2]))
    env.set_task(task_from_json(json.loads(text)))
    assert _json([env.get_task()]) == _json([tasks[2]])


@pytest.mark.parametrize("name", FAMILIES)
def test_same_seed_task_and_actions_give_the_same_trajectory(name):
    env = make_meta_env(name)
    task = env.sample_tasks(2, seed=7)[1]
    actions = _actions(env, 30)
    env.set_task(task)
    first = _rollout(env, actions, seed=5)
    env.set_task(env.sample_tasks(1, seed=8)[0])
    _rollout(env, actions, seed=6)
    env.set_task(task)
    second = _rollout(env, actions, seed=5)
    other = make_meta_env(name, task=task)
    third = _rollout(other, actions, seed=5)
    for a, b in [(first, second), (first, third)]:
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_mujoco) for n in FINITE_SETS])
def test_finite_task_sets_are_drawn_without_replacement(name):
    env = make_meta_env(name)
    (key,) = env.get_task()
    for seed in range(5):
        values = [t[key] for t in env.sample_tasks(2, seed=seed)]
        assert set(values) == FINITE_SETS[name]
        more = [t[key] for t in env.sample_tasks(5, seed=seed)]
        assert set(more[:2]) == set(more[2:4]) == FINITE_SETS[name]


def test_sparse_point_robot_goals_are_a_shuffled_half_circle():
    env = make_meta_env("sparse-point-robot")
    goals = np.array([t["goal"] for t in env.sample_tasks(10, seed=0)])
    assert len({tuple(g) for g in goals}) == 10
    np.testing.assert_allclose(np.linalg.norm(goals, axis=1), 1.0)
    angles = np.sort(np.arctan2(goals[:, 1], goals[:, 0]))
    np.testing.assert_allclose(angles, np.linspace(0, np.pi, 10), atol=1e-12)
    ordered = np.arctan2(goals[:, 1], goals[:, 0])
    assert not np.all(np.diff(ordered) > 0), "not shuffled"


# --------------------------------------------------------------------- point robots
def test_point_robot_moves_by_the_clipped_action_and_truncates():
    env = make_meta_env("point-robot", max_episode_steps=3)
    goal = np.array([0.5, -0.5])
    env.set_task({"goal": goal})
    start, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, _ = env.step(np.array([1.0, 0.05]))
    np.testing.assert_allclose(obs, start + np.array([0.1, 0.05]), atol=1e-6)
    assert reward == pytest.approx(-np.linalg.norm(obs.astype(np.float64) - goal), abs=1e-6)
    assert (terminated, truncated) == (False, False)
    env.step(np.zeros(2))
    assert env.step(np.zeros(2))[2:4] == (False, True)
    goals = np.array([t["goal"] for t in env.sample_tasks(200, seed=0)])
    assert goals.min() >= -1 and goals.max() <= 1 and goals.std() > 0.4


def test_sparse_point_robot_pays_only_inside_the_goal_radius():
    env = make_meta_env("sparse-point-robot", goal_radius=0.2, max_episode_steps=20)
    env.set_task({"goal": np.array([1.0, 0.0])})
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    sparse = []
    for _ in range(10):
        obs, reward, _, _, info = env.step(np.array([0.1, 0.0]))
        sparse.append(info["sparse_reward"])
        distance = np.linalg.norm(obs.astype(np.float64) - [1.0, 0.0])
        assert reward == pytest.approx(-distance, abs=1e-6)  # dense reward returned
        if distance <= 0.2 - 1e-6:
            assert info["sparse_reward"] == pytest.approx(1.0 - distance, abs=1e-6)
        elif distance > 0.2 + 1e-6:
            assert info["sparse_reward"] == 0.0
    assert sparse[:7] == [0.0] * 7 and min(sparse[8:]) > 0.8  # paid only near the goal
    assert sparse[-1] == pytest.approx(1.0, abs=1e-6)  # at the goal


# --------------------------------------------------------------------- MuJoCo reward families
@needs_mujoco
def test_cheetah_vel_reward_peaks_at_the_target_velocity():
    env = make_meta_env("cheetah-vel")
    actions = _actions(env, 40)
    targets = np.linspace(0.0, 3.0, 31)
    runs = []
    for v_goal in targets:
        env.set_task({"velocity": v_goal})
        runs.append(_rollout(env, actions))
    rewards = np.array([r for _, r, _ in runs])  # [targets, steps]
    infos = runs[0][2]
    velocity = np.array([i["x_velocity"] for i in infos])
    for _, _, other in runs:  # the task does not change the dynamics
        np.testing.assert_array_equal([i["x_velocity"] for i in other], velocity)
    ctrl = 0.05 * np.sum(actions[: len(velocity)] ** 2, axis=1)
    np.testing.assert_allclose(
        rewards, -np.abs(velocity[None] - targets[:, None]) - ctrl[None], atol=1e-12
    )
    inside = (velocity > 0.05) & (velocity < 2.95)
    assert inside.any()
    best = targets[np.argmax(rewards, axis=0)]
    np.testing.assert_allclose(best[inside], velocity[inside], atol=0.05 + 1e-9)


@needs_mujoco
@pytest.mark.parametrize(
    ("name", "key", "a", "b", "scale"),
    [
        ("cheetah-dir", "direction", 1.0, -1.0, 1.0),
        ("ant-dir", "angle", 0.0, np.pi, 1.0),
        ("humanoid-dir", "angle", 1.0, 1.0 + np.pi, 0.25),
    ],
)
def test_direction_tasks_reward_the_velocity_along_the_direction(name, key, a, b, scale):
    env = make_meta_env(name)
    actions = _actions(env, 15)
    env.set_task({key: a})
    _, rewards_a, infos_a = _rollout(env, actions)
    env.set_task({key: b})
    _, rewards_b, infos_b = _rollout(env, actions)
    direction = 1.0 if name == "cheetah-dir" else np.array([np.cos(a), np.sin(a)])
    for info in infos_a:
        velocity = (
            info["x_velocity"]
            if name == "cheetah-dir"
            else np.array([info["x_velocity"], info["y_velocity"]])
        )
        assert info["reward_task"] == pytest.approx(scale * float(np.dot(velocity, direction)))
    task_a = np.array([i["reward_task"] for i in infos_a])
    task_b = np.array([i["reward_task"] for i in infos_b])
    np.testing.assert_allclose(task_a, -task_b, atol=1e-9)  # opposite directions
    np.testing.assert_allclose(rewards_a - rewards_b, 2 * task_a, atol=1e-9)


@needs_mujoco
def test_ant_goal_reward_is_minus_the_l1_distance():
    env = make_meta_env("ant-goal")
    actions = _actions(env, 10)
    env.set_task({"goal": np.array([3.0, -1.0])})
    obs, rewards_far, infos = _rollout(env, actions)
    position = np.array([[i["x_position"], i["y_position"]] for i in infos])
    np.testing.assert_allclose(obs[1:, :2], position)  # the observation holds x, y
    expected = -np.abs(position - [3.0, -1.0]).sum(axis=1)
    np.testing.assert_allclose([i["reward_task"] for i in infos], expected)
    ctrl = 0.1 * np.sum(actions[: len(infos)] ** 2, axis=1)
    contact = np.array([i["reward_contact"] for i in infos])
    np.testing.assert_allclose(rewards_far, expected - ctrl + contact)
    env.set_task({"goal": position[-1]})
    _, rewards_near, _ = _rollout(env, actions)
    assert rewards_near[-1] > rewards_far[-1] + 3.0
    goals = np.array([t["goal"] for t in env.sample_tasks(500, seed=0)])
    radii = np.linalg.norm(goals, axis=1)
    assert radii.max() <= 3.0 and np.mean(radii**2) == pytest.approx(4.5, rel=0.1)


# --------------------------------------------------------------------- rand params
@needs_mujoco
@pytest.mark.parametrize("name", ["hopper-rand-params", "walker-rand-params"])
def test_rand_params_change_the_model_and_the_dynamics(name):
    env = make_meta_env(name)
    model = env.unwrapped.model
    original = env.original_params
    tasks = env.sample_tasks(50, seed=0)
    for key, base in [("body_mass", 1.5), ("body_inertia", 1.5), ("dof_damping", 1.3)]:
        nonzero = original[key] > 0
        ratios = np.array([t[key][nonzero] / original[key][nonzero] for t in tasks])
        assert ratios.min() >= base**-3 - 1e-12 and ratios.max() <= base**3 + 1e-12
        assert np.std(np.log(ratios) / np.log(base)) > 1.0  # spread over [-3, 3]
        assert len(np.unique(ratios[0])) == ratios.shape[1]  # per element
    actions = np.zeros((60, *env.action_space.shape))
    base_obs, _, _ = _rollout(env, actions)
    heavy = {**original, "body_mass": original["body_mass"] * 3.0}
    env.set_task(heavy)
    env.set_task(heavy)  # idempotent: written from the originals, not compounded
    np.testing.assert_array_equal(model.body_mass, original["body_mass"] * 3.0)
    heavy_obs, _, _ = _rollout(env, actions)
    env.reset(seed=0)
    np.testing.assert_array_equal(model.body_mass, original["body_mass"] * 3.0)
    n = min(len(base_obs), len(heavy_obs))
    assert np.abs(base_obs[:n] - heavy_obs[:n]).max() > 1e-3, "a heavier body falls the same"
    env.set_task(tasks[0])
    for key in original:
        np.testing.assert_array_equal(getattr(model, key), tasks[0][key])
    env.set_task(original)
    np.testing.assert_array_equal(_rollout(env, actions)[0], base_obs)


# --------------------------------------------------------------------- errors, imports
def test_unknown_family_is_refused_in_one_line_listing_the_known_ones():
    with pytest.raises(ArgumentError) as info:
        make_meta_env("cheetah-speed")
    message = str(info.value)
    assert "\n" not in message and "name" in message and "cheetah-speed" in message
    assert all(known in message for known in META_ENV_NAMES)


@pytest.mark.parametrize(
    ("name", "kwargs", "argument"),
    [
        ("point-robot", {"max_episode_steps": 0}, "max_episode_steps"),
        ("point-robot", {"task": {"goal": [1.0, 2.0, 3.0]}}, "task['goal']"),
        ("point-robot", {"task": {"target": [1.0, 2.0]}}, "task"),
        ("point-robot", {"task": {"goal": ["a", 1.0]}}, "task['goal']"),
        ("sparse-point-robot", {"goal_radius": -0.1}, "goal_radius"),
        pytest.param("cheetah-vel", {"max_episode_steps": 1.5}, "max_episode_steps", marks=MJ),
        pytest.param("cheetah-dir", {"task": {"direction": 0.5}}, "task['direction']", marks=MJ),
        pytest.param("ant-dir", {"forward_backward": "yes"}, "forward_backward", marks=MJ),
        pytest.param("ant-goal", {"task": {"goal": 1.0}}, "task['goal']", marks=MJ),
        pytest.param("hopper-rand-params", {"log_scale_limit": -1.0}, "log_scale_limit", marks=MJ),
        pytest.param("walker-rand-params", {"task": {"body_mass": 1.0}}, "task", marks=MJ),
    ],
)  # fmt: skip
def test_bad_arguments_name_the_argument(name, kwargs, argument):
    with pytest.raises(ArgumentError, match=f"^{re.escape(argument)}"):
        make_meta_env(name, **kwargs)


@pytest.mark.parametrize("name", ["point-robot", pytest.param("cheetah-vel", marks=needs_mujoco)])
def test_bad_sample_tasks_arguments(name):
    env = make_meta_env(name)
    with pytest.raises(ArgumentError, match=r"^n "):
        env.sample_tasks(-1)
    with pytest.raises(ArgumentError, match=r"^seed "):
        env.sample_tasks(2, seed=-3)


@needs_mujoco
def test_rand_params_shape_mismatch_is_refused():
    env = make_meta_env("hopper-rand-params")
    task = env.original_params
    task["dof_damping"] = task["dof_damping"][:-1]
    with pytest.raises(ArgumentError, match=r"^task\['dof_damping'\] must have shape"):
        env.set_task(task)


def test_importing_the_mujoco_families_imports_no_mujoco_env():
    code = (
        "import sys, tdrl.envs, tdrl.envs.meta_mujoco\n"
        "loaded = [m for m in sys.modules if m.startswith('gymnasium.envs.mujoco.')]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["point-robot", "sparse-point-robot"])
def test_point_robots_pass_gymnasium_env_checker(name):
    from gymnasium.utils.env_checker import check_env

    check_env(make_meta_env(name), skip_render_check=True)
