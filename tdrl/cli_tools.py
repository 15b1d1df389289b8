"""``tdrl plot`` and ``tdrl eval``: look at runs and watch trained agents.

``tdrl plot RUN_OR_EXPERIMENT_DIR... -o curves.png`` draws learning curves, mean ± std over
the runs of each group (``tdrl.logging.curves``: runs grouped by directory or by
``--group-by`` settings, ``--x steps|time|iterations``, ``--y`` columns, ``--smooth K``),
and prints each group's last value.

``tdrl eval RUN_DIR`` rebuilds the agent of a ``tdrl train`` run from its ``params.json``,
loads its snapshot (``weights_only``: nothing in it can run code), runs ``--episodes``
evaluation episodes through the samplers' own evaluation loop (recurrent state handled,
the agent in eval mode; ``--deterministic`` takes greedy/mean actions where the agent
samples by default) and prints return statistics. ``--video out.mp4`` records the first
``--video-episodes`` episodes of eval env 0 from gymnasium's ``rgb_array`` frames, written
with PyAV (``pip install "tdrl[video]"``). Atari runs are evaluated per whole game
(``episodic_lives=False``), as training evaluates them.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tdrl.launch.config import int_flag
from tdrl.utils.checks import ArgumentError

__all__ = [
    "FrameRecorder",
    "add_eval_parser",
    "add_plot_parser",
    "evaluate_run",
    "plot_runs",
    "write_video",
]


def _subcommand(sub: Any, name: str, help_line: str, description: str) -> Any:
    """A ``tdrl`` subcommand whose help lists each option's default."""
    return sub.add_parser(
        name,
        help=help_line,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )


# ----------------------------------------------------------------------------------- plot
_GROUP_BY_HELP = (
    "group runs by these settings of variant.json/params.json (dotted for nested ones, e.g. "
    "algo_kwargs.learning_rate; default: by directory)"
)


def add_plot_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds ``tdrl plot`` to the subcommands ``sub``."""
    plot = _subcommand(
        sub,
        "plot",
        "draw learning curves (mean ± std over seeds) from run directories",
        "Learning curves from progress.csv files (tdrl's or rlpyt's): the runs under each "
        "path, grouped by directory or by --group-by settings, mean ± std.",
    )
    plot.add_argument("paths", nargs="+", metavar="RUN_OR_EXPERIMENT_DIR")
    plot.add_argument("-o", "--output", required=True, help="image file (.png, .pdf, .svg)")
    plot.add_argument("--x", default="steps", choices=("steps", "time", "iterations"))
    plot.add_argument(
        "--y", nargs="+", default=["ReturnAverage"], metavar="COLUMN", help="columns to plot"
    )
    plot.add_argument("--group-by", nargs="+", default=[], metavar="KEY", help=_GROUP_BY_HELP)
    plot.add_argument(
        "--smooth", type=int_flag(1), default=1, help="moving average over K log rows"
    )
    plot.add_argument("--title", default=None, help="figure title")
    return plot


def plot_runs(args: argparse.Namespace) -> list[Any]:
    """Runs ``tdrl plot``: finds, groups and draws the runs; prints each curve's end.

    Returns:
        The curves drawn (``tdrl.logging.curves.Curve``).

    Raises:
        FileNotFoundError: A path with no run.
        ValueError: Bad options, an unreadable ``progress.csv``, a column or setting no
            run has.
        ImportError: matplotlib is not installed.
    """
    from tdrl.logging.curves import find_runs, learning_curves, plot_curves

    runs = find_runs(args.paths)
    curves = learning_curves(runs, args.y, x=args.x, group_by=args.group_by, smooth=args.smooth)
    plot_curves(curves, args.output, x=args.x, title=args.title)
    for c in curves:
        print(
            f"{c.label}: {c.y_key} {c.mean[-1]:.2f} ± {c.std[-1]:.2f} at {args.x} "
            f"{c.x[-1]:.0f} ({c.n_runs} run{'s' * (c.n_runs != 1)}, {len(c.x)} points)"
        )
    print(f"tdrl plot: wrote {args.output}")
    return curves


# ----------------------------------------------------------------------------------- eval
def add_eval_parser(sub: Any) -> argparse.ArgumentParser:
    """Adds ``tdrl eval`` to the subcommands ``sub``."""
    ev = _subcommand(
        sub,
        "eval",
        "evaluate a trained agent from a tdrl train run (optionally record a video)",
        "Load a run's snapshot (weights only: nothing in it can run code), run evaluation "
        "episodes and print return statistics.",
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", help="a tdrl train run directory")
    ev.add_argument("--episodes", type=int_flag(1), default=10, help="episodes to complete")
    ev.add_argument("--n-envs", type=int_flag(1), default=1, help="eval envs stepped together")
    ev.add_argument(
        "--max-steps", type=int_flag(1), default=1_000_000, help="env steps at most, all envs"
    )
    ev.add_argument("--seed", type=int_flag(0), default=0, help="seed of the eval envs")
    ev.add_argument("--snapshot", default=None, help="snapshot file (default: the run's latest)")
    ev.add_argument(
        "--deterministic",
        action="store_true",
        help="greedy/mean actions (PG agents sample and DQN agents use eps_eval by default; "
        "SAC, DDPG and TD3 always act deterministically in evaluation)",
    )
    ev.add_argument("--video", default=None, metavar="FILE", help="record a video (.mp4)")
    ev.add_argument(
        "--video-episodes", type=int_flag(1), default=1, help="episodes of eval env 0 to record"
    )
    ev.add_argument("--fps", type=int_flag(1), default=None, help="video frame rate")
    ev.add_argument("--device", default="cpu", help="where the agent acts: cpu, cuda, cuda:N")
    ev.add_argument("--torch-threads", type=int_flag(1), default=1, help="torch threads")
    return ev


def _run_params(run_dir: Path) -> dict[str, Any]:
    """``params.json`` of a ``tdrl train`` run, checked for what ``tdrl eval`` needs."""
    if not run_dir.is_dir():
        raise FileNotFoundError(f"RUN_DIR {run_dir}: no such directory")
    path = run_dir / "params.json"
    try:
        params = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"RUN_DIR {run_dir} has no params.json (not a run)") from None
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(params, dict) or not {"algo", "env"} <= params.keys():
        raise ValueError(
            f"{path} has no algo/env settings: tdrl eval reads runs made by `tdrl train` "
            "(for other runs, load the snapshot with tdrl.logging.load_snapshot)"
        )
    from tdrl.cli_build import ALGOS

    if params["algo"] not in ALGOS or not isinstance(params["env"], str):
        raise ValueError(
            f"{path}: algo must be one of {', '.join(ALGOS)} and env a string, got "
            f"algo={params['algo']!r}, env={params['env']!r}"
        )
    for key in ("algo_kwargs", "agent_kwargs", "env_kwargs"):
        if not isinstance(params.get(key) or {}, dict):
            raise ValueError(f"{path}: {key} must be a mapping, got {params[key]!r}")
    return params


def make_deterministic(agent: Any) -> None:
    """Greedy or mean actions in eval mode, where the agent would sample or explore."""
    if hasattr(agent, "eval_deterministic"):
        agent.eval_deterministic = True
    exploration = getattr(agent, "exploration", None)
    if exploration is not None and hasattr(exploration, "eps_eval"):
        exploration.eps_eval = 0.0


def evaluate_run(args: argparse.Namespace) -> dict[str, float]:
    """Runs ``tdrl eval``: rebuild, load, evaluate, print; optionally write a video.

    Returns:
        ``Episodes`` and each ``TrajInfo`` field's ``Average``/``Std``/``Median``/``Min``/
        ``Max`` (``ReturnAverage``, ``LengthMax``, ``GameScoreAverage`` for Atari, ...), the
        statistics and names of training rows.

    Raises:
        FileNotFoundError: No run, params.json or snapshot.
        ValueError: A run ``tdrl eval`` cannot rebuild, bad options, or an env that
            cannot render frames for ``--video``.
        ImportError: ``--video`` without PyAV.
        SnapshotError: A snapshot that is corrupt or holds more than tensors and data.
    """
    import torch

    from tdrl.cli_build import _env_settings, _make_algo_agent
    from tdrl.logging import load_snapshot
    from tdrl.runners.startup import place_agent
    from tdrl.samplers import SerialSampler
    from tdrl.utils.device import check_device

    if args.video is not None and args.video_episodes > args.episodes:
        raise ArgumentError(
            f"--video-episodes {args.video_episodes} must be <= --episodes {args.episodes}"
        )
    if args.video is not None:
        _check_video_file(args.video)
        if not os.environ.get("DISPLAY"):  # headless: MuJoCo through EGL, pygame offscreen
            os.environ.setdefault("MUJOCO_GL", "egl")
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    device = check_device("--device", args.device)
    run_dir = Path(args.run_dir)
    params = _run_params(run_dir)
    snap = load_snapshot(args.snapshot or run_dir, map_location="cpu")
    if "agent_state_dict" not in snap:
        raise ValueError(f"the snapshot of {run_dir} has no agent_state_dict")
    torch.set_num_threads(args.torch_threads)
    if params["algo"] == "pearl":
        return _evaluate_pearl(args, params, snap, device)
    _, agent = _make_algo_agent(
        params["algo"],
        dict(params.get("algo_kwargs") or {}),
        params["env"],
        recurrent=bool(params.get("recurrent", False)),
        agent_kwargs=dict(params.get("agent_kwargs") or {}),
    )
    env_fn, env_kwargs, eval_kwargs, traj_info_cls = _env_settings(
        params["env"],
        params.get("env_kwargs"),  # the run's preset's (AtariEnv's, ...)
    )
    recorder: list[FrameRecorder] = []
    if args.video is not None:
        env_fn = _recording_env_fn(env_fn, recorder, args.video_episodes)
        eval_kwargs["record"] = True
    sampler = SerialSampler(
        env_fn,
        env_kwargs,
        batch_T=1,
        batch_B=1,
        max_decorrelation_steps=0,
        eval_n_envs=args.n_envs,
        eval_env_kwargs=eval_kwargs,
        eval_max_steps=args.max_steps,
        eval_max_trajectories=args.episodes,
        traj_info_cls=traj_info_cls,
    )
    try:
        sampler.initialize(agent, seed=args.seed)
        agent.load_state_dict(snap["agent_state_dict"])
        place_agent(agent, device)
        if args.deterministic:
            make_deterministic(agent)
        trajs = sampler.evaluate_agent(int(snap.get("itr", 0)))
    finally:
        sampler.shutdown()
    if not trajs:
        raise ValueError(f"no episode ended within --max-steps {args.max_steps}; raise --max-steps")
    result = _summary(trajs)
    if args.video is not None:
        frames = recorder[0].frames if recorder else []
        fps = args.fps or (recorder[0].fps if recorder else 30)
        write_video(args.video, frames, fps=fps)
        print(f"tdrl eval: wrote {args.video} ({len(frames)} frames, {fps} fps)")
    shown = ["ReturnAverage", "ReturnStd", "ReturnMin", "ReturnMax", "LengthAverage"]
    shown += ["GameScoreAverage"] if "GameScoreAverage" in result else []
    line = ", ".join(f"{k} {result[k]:.2f}" for k in shown)
    print(f"tdrl eval: {int(result['Episodes'])} episodes of {params['env']}: {line}")
    return result


def _evaluate_pearl(
    args: argparse.Namespace, params: dict[str, Any], snap: dict[str, Any], device: Any
) -> dict[str, float]:
    """``tdrl eval`` of a PEARL run on its test tasks (``evaluate_pearl_run``); no video."""
    from tdrl.runners.meta_presets import evaluate_pearl_run

    if args.video is not None:
        raise ArgumentError("--video does not apply to PEARL runs (their episodes switch tasks)")
    result = evaluate_pearl_run(params, snap, device=device)
    online = [v for k, v in result.items() if k.startswith("AverageReturn_rollout_")]
    print(
        f"tdrl eval: PEARL on {int(result['Tasks'])} test tasks of {params['env']} "
        f"({int(result['Episodes'] / result['Tasks'])} runs each): AverageReturn_all_test_tasks "
        f"{result['AverageReturn_all_test_tasks']:.2f} (ReturnStd over tasks "
        f"{result['ReturnStd']:.2f}); per trajectory: {', '.join(f'{v:.2f}' for v in online)}"
    )
    return result


def _summary(trajs: Sequence[Any]) -> dict[str, float]:
    """``Episodes`` and every ``TrajInfo`` field's statistics, named as training rows."""
    from tdrl.logging.table import misc_stats

    out = {"Episodes": float(len(trajs))}
    for name in trajs[0].fields():
        values = [t.fields()[name] for t in trajs]
        out |= {f"{name}{k}": v for k, v in misc_stats(values).items()}
    return out


# ---------------------------------------------------------------------------------- video
def _check_video_file(path: str) -> None:
    """Refuses an output the run could not write, before anything runs."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise FileNotFoundError(f"--video {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"--video {path}: directory {parent} is not writable")
    if Path(path).suffix.lower() not in (".mp4", ".mkv", ".mov", ".webm", ".gif"):
        raise ArgumentError(f"--video {path}: expected a .mp4, .mkv, .mov, .webm or .gif file")
    try:
        import av  # noqa: F401
    except ImportError:
        raise ImportError('--video needs PyAV: pip install "tdrl[video]"') from None


class FrameRecorder:
    """Wraps a gymnasium env built with ``render_mode="rgb_array"``; keeps its frames.

    Records the frame after every reset and step of the first ``episodes`` episodes
    (an episode ends at ``terminated or truncated``).

    Args:
        env: the env.
        episodes: episodes to record.
    """

    def __init__(self, env: Any, episodes: int):
        import gymnasium as gym

        if getattr(env, "render_mode", None) != "rgb_array":
            raise ValueError(
                f"--video: the env cannot render rgb_array frames "
                f"(render_mode={getattr(env, 'render_mode', None)!r})"
            )
        self.env = env
        self.frames: list[np.ndarray] = []
        self.episodes_left = episodes
        self.fps = int(env.metadata.get("render_fps") or 30)
        recorder = self

        class _Recording(gym.Wrapper):
            def reset(self, **kwargs: Any) -> Any:
                out = self.env.reset(**kwargs)
                recorder.keep()
                return out

            def step(self, action: Any) -> Any:
                out = self.env.step(action)
                recorder.keep()
                if out[2] or out[3]:
                    recorder.episodes_left -= 1
                return out

        self.wrapped = _Recording(env)

    def keep(self) -> None:
        """Store the env's current frame while episodes are left to record."""
        if self.episodes_left > 0:
            try:
                frame = self.env.render()
            except Exception as e:  # e.g. pygame or an OpenGL backend missing here
                raise ValueError(f"--video: the env cannot render here: {_why(e)}") from None
            if frame is None:
                raise ValueError("--video: the env rendered no frame (render() gave None)")
            self.frames.append(np.asarray(frame, dtype=np.uint8))


def _recording_env_fn(
    env_fn: Callable[..., Any], recorders: list[FrameRecorder], episodes: int
) -> Callable[..., Any]:
    """``env_fn`` whose first env built with ``record=True`` (eval env 0) is recorded.

    Every other env is ``env_fn``'s own.
    """

    def make(*, record: bool = False, **kwargs: Any) -> Any:
        if not record or recorders:
            return env_fn(**kwargs)
        try:
            env = env_fn(**kwargs, render_mode="rgb_array")
        except TypeError as e:
            raise ValueError(f"--video: the env takes no render_mode ({e})") from None
        except Exception as e:  # e.g. MuJoCo without an OpenGL backend on this machine
            raise ValueError(f"--video: the env cannot render here: {_why(e)}") from None
        recorder = FrameRecorder(env, episodes)
        recorders.append(recorder)
        return recorder.wrapped

    return make


def _why(error: BaseException) -> str:
    """A render failure in one line, with the usual remedies."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    if "pygame" in text:
        text += ' (pip install "tdrl[video]" brings pygame for the classic-control envs)'
    elif "GL" in text or "mujoco" in text.lower():
        text += " (MuJoCo without a display: MUJOCO_GL=egl, or MUJOCO_GL=osmesa)"
    return text


def write_video(path: str | os.PathLike[str], frames: Sequence[np.ndarray], *, fps: int) -> None:
    """Encode ``[H, W, 3]`` uint8 frames into ``path`` with PyAV.

    H.264 in .mp4/.mkv/.mov, VP9 in .webm, GIF in .gif; odd sizes are padded by one pixel.

    Raises:
        ValueError: (one line) no frames, or frames of different or wrong shapes.
        ImportError: PyAV is not installed.
    """
    try:
        import av
    except ImportError:
        raise ImportError('writing a video needs PyAV: pip install "tdrl[video]"') from None
    if not frames:
        raise ValueError("no frames to write: the recorded env rendered none")
    shape = frames[0].shape
    if len(shape) != 3 or shape[2] != 3 or any(f.shape != shape for f in frames):
        raise ValueError(f"frames must all be [H, W, 3] uint8 of one size, got {shape} first")
    suffix = Path(path).suffix.lower()
    codec, pix_fmt = {".gif": ("gif", "rgb8"), ".webm": ("libvpx-vp9", "yuv420p")}.get(
        suffix, ("libx264", "yuv420p")
    )
    height, width = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
    with av.open(os.fspath(path), mode="w") as container:
        stream = container.add_stream(codec, rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for frame in frames:
            if frame.shape[:2] != (height, width):
                frame = np.pad(frame, ((0, height - shape[0]), (0, width - shape[1]), (0, 0)))
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
