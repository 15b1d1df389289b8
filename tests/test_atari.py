"""AtariEnv on real ROMs: frames, frame stack, rewards, lives, horizon, seeding."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ale_py")

from tdrl.envs.atari import (
    AtariEnv,
    AtariTrajInfo,
    FrameProcessor,
    make_atari_env,
)
from tdrl.envs.traj_info import TrajTracker


def _screens(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 256, (210, 160), dtype=np.uint8) for _ in range(2))


# ------------------------------------------------------------------ frame processing
def test_frame_processor_default_is_rlpyt_crop_and_2x_nearest():
    a, b = _screens()
    frame = FrameProcessor((104, 80))(a, b)
    expected = np.maximum(a, b)[1:209][::2, ::2]  # crop 1 row top/bottom, every other
    assert frame.dtype == np.uint8 and frame.shape == (104, 80)
    np.testing.assert_array_equal(frame, expected)


def test_frame_processor_84_is_nearest_at_pixel_centres():
    a, b = _screens(1)
    out = np.empty((84, 84), dtype=np.uint8)
    frame = FrameProcessor((84, 84))(a, b, out)
    assert frame is out
    rows = [int((i + 0.5) * 210 / 84) for i in range(84)]
    cols = [int((j + 0.5) * 160 / 84) for j in range(84)]
    expected = np.array([[max(a[r, c], b[r, c]) for c in cols] for r in rows], dtype=np.uint8)
    np.testing.assert_array_equal(frame, expected)


def test_frame_processor_rejects_other_shapes():
    with pytest.raises(ValueError, match="frame_shape"):
        FrameProcessor((84, 80))


# ----------------------------------------------------------------- observations
@pytest.mark.parametrize("frame_shape", [(104, 80), (84, 84)])
def test_observation_shape_dtype_and_space(frame_shape):
    env = make_atari_env("pong", frame_shape=frame_shape, seed=0)
    obs, info = env.reset()
    assert env.observation_space.shape == (4, *frame_shape)
    assert obs.shape == (4, *frame_shape) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert (obs[:-1] == 0).all() and obs[-1].any()  # zeroed stack, current frame newest
    assert env.action_space.n == len(env.get_action_meanings()) == 6
    assert env.get_action_meanings()[:2] == ["NOOP", "FIRE"]
    obs2, *_ = env.step(2)
    assert obs2.shape == obs.shape and obs2.dtype == np.uint8
    assert info == {"lives": 0}


def test_frame_stack_is_ordered_oldest_to_newest():
    env = AtariEnv("pong", seed=0)
    old, _ = env.reset()
    for t in range(8):
        new, *_ = env.step(t % env.action_space.n)
        np.testing.assert_array_equal(new[:-1], old[1:])
        old = new
    assert (old != 0).any(axis=(1, 2)).all()  # the zeros have been shifted out


def test_newest_frame_is_max_of_last_two_raw_screens():
    """Replay each step from a cloned emulator state, reading the two raw screens."""
    env = AtariEnv("pong", frame_skip=2, max_start_noops=0, seed=0)
    env.reset()
    ale, process = env.ale, FrameProcessor((104, 80))
    differs_from_last = False
    for t in range(60):
        action = env._action_set[t % 3 + 1]
        state = ale.cloneState()
        obs, *_ = env.step(t % 3 + 1)
        ale.restoreState(state)
        ale.act(action)
        first = ale.getScreenGrayscale()
        ale.act(action)
        last = ale.getScreenGrayscale()
        np.testing.assert_array_equal(obs[-1], process(first, last))
        differs_from_last |= not np.array_equal(obs[-1], process(last, last))
    assert differs_from_last  # the max-pooling did something somewhere


# ----------------------------------------------------------------------- rewards
def test_reward_clipping_and_raw_game_score():
    for clip in (True, False):
        env = AtariEnv("space_invaders", clip_reward=clip, episodic_lives=False, seed=0)
        env.reset()
        rng = np.random.default_rng(0)
        for _ in range(1000):
            _, reward, *_, info = env.step(int(rng.integers(env.action_space.n)))
            assert isinstance(reward, float)
            if info["game_score"] > 1:
                break
        else:
            pytest.fail("no multi-point score in 1000 steps")
        assert reward == (1.0 if clip else info["game_score"])


# -------------------------------------------------------------- lives and game over
def test_life_loss_ends_episode_without_resetting_the_game():
    # Breakout: FIRE launches the ball, the paddle never moves, so lives are lost fast.
    env = AtariEnv("breakout", fire_on_reset=False, seed=0)
    _, info = env.reset()
    lives = info["lives"]
    assert lives == 5
    for _ in range(500):
        obs, _, terminated, truncated, info = env.step(1)
        if terminated:
            break
    assert terminated and not truncated
    assert info["lives"] == lives - 1
    assert not info["game_over"] and not info["traj_done"]
    frame_number = env.ale.getEpisodeFrameNumber()
    obs2, info2 = env.reset()
    assert info2["lives"] == lives - 1  # same game goes on
    assert env.ale.getEpisodeFrameNumber() == frame_number  # no hard reset, no noops
    assert (obs2[:-1] == 0).all()
    np.testing.assert_array_equal(obs2[-1], obs[-1])


def test_game_over_then_hard_reset_and_fire_on_reset():
    env = AtariEnv("breakout", fire_on_reset=True, max_start_noops=0, seed=0)
    env.reset()
    lost = 0
    for _ in range(2000):
        _, _, terminated, _, info = env.step(0)  # NOOP: reset's FIRE serves
        if terminated:
            if info["game_over"]:
                break
            lost += 1
            env.reset()
            assert env.ale.getEpisodeFrameNumber() > 1  # continued, FIRE pressed
    assert terminated and info["game_over"] and info["traj_done"] and info["lives"] == 0
    assert lost == 4
    _, info = env.reset()
    assert info["lives"] == 5
    assert env.ale.getEpisodeFrameNumber() == 1  # reset_game, 0 noops, FIRE


def test_without_episodic_lives_only_game_over_terminates():
    env = AtariEnv("breakout", episodic_lives=False, fire_on_reset=True, seed=0)
    env.reset()
    lives_seen = set()
    for _ in range(2000):
        _, _, terminated, _, info = env.step(0)
        lives_seen.add(info["lives"])
        if terminated:
            break
    assert terminated and info["game_over"] and lives_seen == {0, 1, 2, 3, 4, 5}


def test_horizon_truncates_and_next_reset_is_hard():
    env = AtariEnv("pong", horizon=10, max_start_noops=0, seed=0)
    env.reset()
    for t in range(1, 11):
        _, _, terminated, truncated, info = env.step(0)
        assert truncated == (t == 10) and not terminated
        assert info["game_over"] == info["traj_done"] == (t == 10)
    env.reset()
    assert env.ale.getEpisodeFrameNumber() == 0


# ------------------------------------------------------------------------- seeding
def _rollout(env: AtariEnv, seed: int | None, n: int = 50) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    frames = [obs[-1]]
    for t in range(n):
        obs, *_ = env.step(t % env.action_space.n)
        frames.append(obs[-1])
    return np.stack(frames)


def test_same_seed_same_trajectory_different_seed_differs():
    kwargs = {"repeat_action_probability": 0.25}  # also exercises the ALE's seeded RNG
    env = AtariEnv("pong", **kwargs)
    a = _rollout(env, seed=1)
    b = _rollout(env, seed=1)  # reseeding the same env
    c = _rollout(AtariEnv("pong", seed=1, **kwargs), seed=None)  # constructor seed
    d = _rollout(env, seed=2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, d)


# --------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("frame_skip", 0),
        ("num_img_obs", 0),
        ("clip_reward", 1),
        ("episodic_lives", "yes"),
        ("fire_on_reset", None),
        ("max_start_noops", -1),
        ("repeat_action_probability", 1.5),
        ("horizon", 0),
        ("frame_shape", (84, 80)),
        ("seed", -3),
    ],
)
def test_bad_arguments_raise_naming_them(name, value):
    with pytest.raises(ValueError, match=name):
        AtariEnv("pong", **{name: value})


def test_unknown_game_and_fire_without_fire_action():
    with pytest.raises(ValueError, match=r"'pongg'.*'pong'"):
        AtariEnv("pongg")
    with pytest.raises(ValueError, match="fire_on_reset"):
        AtariEnv("freeway", fire_on_reset=True)
    assert AtariEnv("SpaceInvaders").game == "space_invaders"


# ------------------------------------------------------------------------ traj info
def test_atari_traj_info_sums_raw_game_score():
    env = AtariEnv("space_invaders", episodic_lives=False, seed=0)
    env.reset()
    tracker = TrajTracker(1, AtariTrajInfo)
    assert tracker.needs_info
    rng = np.random.default_rng(0)
    total_score = 0.0
    for _ in range(300):
        _, reward, _, _, info = env.step(int(rng.integers(env.action_space.n)))
        tracker.step(np.array([reward]))
        tracker.step_info(0, info)
        total_score += info["game_score"]
    traj = tracker.finish(0, info)
    assert isinstance(traj, AtariTrajInfo)
    assert traj.GameScore == total_score > traj.Return > 0  # raw score above clipped sum
    assert "GameScore" in traj.fields() and traj.Length == 300
