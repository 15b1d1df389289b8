"""Atari 2600 games as rlpyt's ``AtariEnv`` plays them, as a plain ``gymnasium.Env``.

The env drives ``ale_py.ALEInterface`` directly (no gymnasium Atari wrappers, no OpenCV):
frame skipping, anti-flicker max-pooling, downsampling, frame stacking, reward clipping,
episodic lives and start no-ops all happen here, with NumPy only and in ``uint8``.

Episodes as the learner sees them and games as the ALE plays them differ when
``episodic_lives=True`` (the default): losing a life ends the learner's episode
(``terminated=True``) while the game goes on; the sampler's ``reset()`` then only clears the
frame stack. ``info["traj_done"]`` (rlpyt's name) says when the real game ended.

``ale_py`` is imported when the first env is built, so importing this module is cheap.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from tdrl.envs.traj_info import TrajInfo
from tdrl.utils.checks import check_bool, check_choice, check_int, check_range

__all__ = [
    "FRAME_SHAPES",
    "AtariEnv",
    "AtariTrajInfo",
    "FrameProcessor",
    "make_atari_env",
]

FRAME_SHAPES: tuple[tuple[int, int], ...] = ((104, 80), (84, 84))
"""The supported processed frame shapes ``(H, W)``: rlpyt's default, and DQN's 84×84."""

_NOOP = 0  # ALE action ids (the full legal set), independent of the game
_FIRE = 1


class FrameProcessor:
    """Turns two raw grayscale screens into one observation frame (NumPy only, ``uint8``).

    The frame is the pixel-wise max of the two screens (removes the flicker of sprites drawn
    every other frame), downsampled to ``frame_shape``. Downsampling selects pixels, which
    commutes with the max, so only the selected pixels are compared.

    * ``(104, 80)`` is rlpyt's processing: drop the first and last row (210 → 208), then
      keep every other row and column (nearest-neighbour 2× downsampling: raw rows
      1, 3, ..., 207 and columns 0, 2, ..., 158). Done with strided views.
    * ``(84, 84)`` is a nearest-neighbour resize of the full screen that samples the raw
      pixel under each output pixel's centre (row ``floor((i + 0.5) * 210 / 84)``, likewise
      for columns); no averaging, so frames hold exact screen values. Done with a
      precomputed flat index map.

    Args:
        frame_shape: one of ``FRAME_SHAPES``.
        screen_shape: the raw screen ``(height, width)``, ``(210, 160)`` for every ALE game.

    Raises:
        ValueError: unsupported ``frame_shape``, or a screen too small for it.
    """

    def __init__(self, frame_shape: tuple[int, int], screen_shape: tuple[int, int] = (210, 160)):
        self.frame_shape = _frame_shape(frame_shape)
        self.screen_shape = (int(screen_shape[0]), int(screen_shape[1]))
        H, W = self.frame_shape
        sh, sw = self.screen_shape
        if self.frame_shape == (104, 80):
            rows = 1 + 2 * np.arange(H)
            cols = 2 * np.arange(W)
            self._slices: tuple[slice, slice] | None = (slice(1, 1 + 2 * H, 2), slice(0, 2 * W, 2))
        else:
            rows = ((np.arange(H) + 0.5) * sh / H).astype(np.intp)
            cols = ((np.arange(W) + 0.5) * sw / W).astype(np.intp)
            self._slices = None  # not a stride pattern: fancy indexing
        if rows[-1] >= sh or cols[-1] >= sw:
            raise ValueError(f"frame_shape {frame_shape} does not fit a {screen_shape} screen")
        self.rows, self.cols = rows, cols
        self._index = (rows[:, None] * sw + cols[None, :]).astype(np.intp)
        self._scratch = np.empty(self.frame_shape, dtype=np.uint8)

    def __call__(
        self, screen_a: np.ndarray, screen_b: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The frame for two raw screens ``[210, 160]`` (``uint8``, C-contiguous).

        Args:
            screen_a: one raw grayscale screen.
            screen_b: the other (order does not matter).
            out: ``uint8`` array of ``frame_shape`` to write into (allocated when ``None``).

        Returns:
            ``out``.
        """
        if out is None:
            out = np.empty(self.frame_shape, dtype=np.uint8)
        if self._slices is not None:
            return np.maximum(screen_a[self._slices], screen_b[self._slices], out=out)
        np.take(screen_a.reshape(-1), self._index, out=self._scratch)
        np.take(screen_b.reshape(-1), self._index, out=out)
        return np.maximum(self._scratch, out, out=out)


def _frame_shape(frame_shape: Any) -> tuple[int, int]:
    """``frame_shape`` as one of ``FRAME_SHAPES`` (a list or array of two ints is fine)."""
    try:
        shape: Any = tuple(check_int("frame_shape", s, minimum=1) for s in frame_shape)
    except (TypeError, ValueError):  # not a pair of whole numbers: named below
        shape = frame_shape
    return check_choice("frame_shape", shape, FRAME_SHAPES)


def _rom_path(game: Any) -> tuple[str, str]:
    """``(rom_id, path)`` for a game name; snake_case (rlpyt) or CamelCase is accepted."""
    from ale_py import roms

    if not isinstance(game, str) or not game:
        raise ValueError(f"game must be a game name such as 'pong', got {game!r}")
    rom_id = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", game).lower()
    available = roms.get_all_rom_ids()
    if rom_id not in available:
        examples = ", ".join(repr(g) for g in ("pong", "breakout", "space_invaders", "seaquest"))
        raise ValueError(
            f"game {game!r} is not an ALE game known to ale-py (e.g. {examples}; "
            f"{len(available)} available: ale_py.roms.get_all_rom_ids())"
        )
    return rom_id, str(roms.get_rom_path(rom_id))


class AtariEnv(gym.Env):
    """An Atari game with rlpyt's ``AtariEnv`` options and defaults.

    Each ``step(a)`` repeats the minimal-set action ``a`` for ``frame_skip`` frames and sums
    the raw score. The newest observation frame is the max over the last two raw grayscale
    screens (with ``frame_skip=1``: this step's and the previous one's), downsampled to
    ``frame_shape``; the observation stacks the last ``num_img_obs`` frames, oldest first.

    Episode ends:

    * game over: ``terminated=True``; the next ``reset()`` is a hard reset (``reset_game``,
      then a random number of NOOPs in ``[0, max_start_noops]`` and an optional FIRE).
    * a life lost with ``episodic_lives=True``: ``terminated=True`` but the game goes on; the
      next ``reset()`` only zeroes the frame stack (current frame newest) and, with
      ``fire_on_reset``, presses FIRE, like rlpyt. With ``episodic_lives=False`` and
      ``fire_on_reset``, FIRE is pressed inside the step that lost the life.
    * ``horizon`` steps since the last hard reset: ``truncated=True``; the next ``reset()``
      is a hard reset.

    A ``reset()`` with no life loss pending is always a hard reset.

    ``info`` of every step: ``game_score`` (raw score of the step, summed over the frame
    skip, ``float``), ``lives`` (``int``), ``game_over`` (the game ended or the horizon was
    reached) and ``traj_done`` (rlpyt's name for the same: the real game ended, not only a
    life).

    Seeding: ``reset(seed=s)`` reseeds ``np_random`` (start no-ops) and the ALE (sticky
    actions) and reloads the ROM, so one seed gives one trajectory; the constructor's
    ``seed`` does the same for the first ``reset()``.

    Args:
        game: ALE game name in rlpyt's snake_case (``"pong"``, ``"space_invaders"``).
        frame_skip: emulator frames per step (the action is repeated).
        num_img_obs: frames stacked in the observation.
        clip_reward: reward is ``sign(score)`` instead of the raw score.
        episodic_lives: a lost life ends the learner's episode (not the game).
        fire_on_reset: press FIRE after every reset and lost life (needed by games such as
            Breakout to launch the ball; FIRE only, no UP); the game's minimal action set
            must contain FIRE.
        max_start_noops: a hard reset takes a uniform number of NOOPs in
            ``[0, max_start_noops]``.
        repeat_action_probability: ALE sticky actions (0: deterministic emulator).
        horizon: steps after which a game is truncated.
        frame_shape: processed frame ``(H, W)``: ``(104, 80)`` (rlpyt: crop one row top and
            bottom, keep every other row and column) or ``(84, 84)`` (nearest-neighbour
            resize of the full screen).
        seed: seeds ``np_random`` and the ALE (``None``: from OS entropy).
        render_mode: ``"rgb_array"``: ``render()`` returns the emulator's ``[210, 160, 3]``
            colour screen (``tdrl eval --video``); None: no rendering.

    Raises:
        ValueError: an argument is invalid (the message names it).
        ImportError: ale-py is not installed.
    """

    #: 60 emulator frames per second, ``frame_skip`` (4) per step.
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}  # noqa: RUF012

    def __init__(
        self,
        game: str = "pong",
        *,
        frame_skip: int = 4,
        num_img_obs: int = 4,
        clip_reward: bool = True,
        episodic_lives: bool = True,
        fire_on_reset: bool = False,
        max_start_noops: int = 30,
        repeat_action_probability: float = 0.0,
        horizon: int = 27000,
        frame_shape: tuple[int, int] = (104, 80),
        seed: int | None = None,
        render_mode: str | None = None,
    ):
        try:
            import ale_py
        except ImportError as e:
            raise ImportError('AtariEnv needs ale-py: pip install "tdrl[atari]"') from e

        self.game, self._rom_path = _rom_path(game)
        self.frame_skip = check_int("frame_skip", frame_skip, minimum=1)
        self.num_img_obs = check_int("num_img_obs", num_img_obs, minimum=1)
        self.clip_reward = check_bool("clip_reward", clip_reward)
        self.episodic_lives = check_bool("episodic_lives", episodic_lives)
        self.fire_on_reset = check_bool("fire_on_reset", fire_on_reset)
        self.max_start_noops = check_int("max_start_noops", max_start_noops, minimum=0)
        repeat_action_probability = check_range(
            "repeat_action_probability", repeat_action_probability, 0.0, 1.0
        )
        self.repeat_action_probability = float(repeat_action_probability)
        self.horizon = check_int("horizon", horizon, minimum=1)
        self.frame_shape = _frame_shape(frame_shape)
        if seed is not None:
            seed = check_int("seed", seed, minimum=0)
        if render_mode is not None:
            render_mode = check_choice("render_mode", render_mode, ("rgb_array",))
        self.render_mode = render_mode

        ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        self.ale = ale_py.ALEInterface()
        self.ale.setFloat("repeat_action_probability", self.repeat_action_probability)
        self.ale.setInt("frame_skip", 1)
        self._np_random, self._np_random_seed = seeding.np_random(seed)
        self._load_rom()

        self._action_set = list(self.ale.getMinimalActionSet())
        if self.fire_on_reset and ale_py.Action.FIRE not in self._action_set:
            raise ValueError(
                f"fire_on_reset=True but game {self.game!r} has no FIRE action "
                f"(minimal action set: {self.get_action_meanings()})"
            )
        self.action_space = gym.spaces.Discrete(len(self._action_set))
        H, W = self.frame_shape
        self.observation_space = gym.spaces.Box(0, 255, (self.num_img_obs, H, W), dtype=np.uint8)

        height, width = (int(s) for s in self.ale.getScreenDims())
        screen_shape = (height, width)
        self._process = FrameProcessor(self.frame_shape, screen_shape)
        self._screens = np.zeros((2, *screen_shape), dtype=np.uint8)
        self._newest = 0  # which of self._screens holds the latest raw screen
        self._stack = np.zeros(self.observation_space.shape, dtype=np.uint8)
        self._lives = 0
        self._steps = 0  # steps since the last hard reset
        self._needs_hard_reset = True
        self._life_lost = False  # a lost life ended the learner's episode; game goes on

    # ------------------------------------------------------------------------- helpers
    def _load_rom(self) -> None:
        """Seed the ALE from ``np_random`` and (re)load the ROM (the seed acts on load)."""
        self.ale.setInt("random_seed", int(self.np_random.integers(0, 2**31 - 1)))
        self.ale.loadROM(self._rom_path)

    def _grab_screen(self) -> None:
        """Read the current raw screen into the older of the two screen buffers."""
        self._newest ^= 1
        self.ale.getScreenGrayscale(self._screens[self._newest])

    def _act_raw(self, ale_action: Any) -> float:
        """One emulator frame (used outside the step loop); tracks the screens."""
        score = self.ale.act(ale_action)
        self._grab_screen()
        return float(score)

    def _restart_stack(self) -> np.ndarray:
        """Zero the frame stack and put the current frame in as the newest."""
        self._stack.fill(0)
        self._process(self._screens[0], self._screens[1], self._stack[-1])
        return self._stack.copy()

    def _hard_reset(self) -> None:
        ale = self.ale
        ale.reset_game()
        ale.getScreenGrayscale(self._screens[0])
        self._screens[1] = self._screens[0]
        n_noops = int(self.np_random.integers(0, self.max_start_noops + 1))
        for _ in range(n_noops):
            self._act_raw(_NOOP)
            if ale.game_over():  # cannot happen in practice; never start from a dead game
                ale.reset_game()
        if self.fire_on_reset:
            self._act_raw(_FIRE)
        self._lives = ale.lives()
        self._steps = 0

    # ---------------------------------------------------------------------- gym API
    def render(self) -> np.ndarray | None:
        """The emulator's colour screen ``[210, 160, 3]`` (uint8), or None.

        None without ``render_mode="rgb_array"``.
        """
        if self.render_mode is None:
            return None
        return self.ale.getScreenRGB()

    def get_action_meanings(self) -> list[str]:
        """Names of the actions (``"NOOP"``, ``"FIRE"``, ...), by action index."""
        return [a.name for a in self._action_set]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start the learner's next episode (see the class docstring for hard vs. life reset).

        Args:
            seed: reseeds ``np_random`` and the ALE, reloads the ROM, and hard-resets.
            options: unused.

        Returns:
            ``(observation, {"lives": int})``.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._load_rom()
            self._needs_hard_reset = True
        if self._needs_hard_reset or not self._life_lost:
            self._hard_reset()
        elif self.fire_on_reset:
            self._act_raw(_FIRE)
        self._needs_hard_reset = False
        self._life_lost = False
        return self._restart_stack(), {"lives": self._lives}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play ``action`` (an index into the minimal action set) for ``frame_skip`` frames.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``reward`` is
            ``sign(score)`` with ``clip_reward``, else the raw score.
        """
        ale, screens = self.ale, self._screens
        a = self._action_set[action]
        score = 0.0
        first_grab = self.frame_skip - 2
        for i in range(self.frame_skip):
            score += ale.act(a)
            if i >= first_grab:
                self._newest ^= 1
                ale.getScreenGrayscale(screens[self._newest])
        score = float(score)
        game_over = ale.game_over()
        lives = ale.lives()
        lost_life = lives < self._lives and not game_over
        self._lives = lives
        if lost_life and self.fire_on_reset and not self.episodic_lives:
            score += self._act_raw(_FIRE)

        stack = self._stack
        stack[:-1] = stack[1:]
        self._process(screens[0], screens[1], stack[-1])

        self._steps += 1
        truncated = self._steps >= self.horizon
        self._life_lost = lost_life and self.episodic_lives
        terminated = game_over or self._life_lost
        traj_done = game_over or truncated
        self._needs_hard_reset = traj_done
        reward = float((score > 0) - (score < 0)) if self.clip_reward else score
        info = {"game_score": score, "lives": lives, "game_over": traj_done, "traj_done": traj_done}
        return stack.copy(), reward, terminated, truncated, info


class AtariTrajInfo(TrajInfo):
    """``TrajInfo`` plus ``GameScore``: the raw (unclipped) game score of the episode.

    ``Return`` sums the clipped rewards; ``GameScore`` sums ``info["game_score"]``. The
    samplers close a record only where the step's ``info["traj_done"]`` is true (rlpyt's
    rule): with ``episodic_lives=True`` a lost life ends the learner's episode but not the
    record, so ``Return``, ``GameScore`` and ``Length`` are whole-game figures in training
    as in evaluation.
    """

    def __init__(self) -> None:
        super().__init__()
        self.GameScore = 0.0

    def step_info(self, info: dict[str, Any]) -> None:
        """Add the step's raw game score."""
        self.GameScore += info["game_score"]


def make_atari_env(game: str = "pong", **kwargs: Any) -> AtariEnv:
    """``AtariEnv(game, **kwargs)``: a factory to pass as a sampler's ``env_fn``.

    Args:
        game: ALE game name (``"pong"``, ``"breakout"``, ``"space_invaders"``, ...).
        **kwargs: ``AtariEnv``'s keyword arguments.

    Returns:
        The env.
    """
    return AtariEnv(game, **kwargs)
