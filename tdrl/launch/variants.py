"""Variants: grids of config changes, each with its own log directory (rlpyt's ``variant.py``).

A *variant* is a nested dict of the config entries that differ from a default config,
e.g. ``{"algo": {"learning_rate": 3e-4}}``. :func:`make_variants` crosses
:class:`VariantLevel` s into every combination; the launcher saves each variant as
``variant_config.json`` in its log directory, and the launched script merges it into its
default config with :func:`update_config`::

    lr = VariantLevel(keys=["learning_rate"], values=[[1e-3], [3e-4]],
                      dir_names=["lr_1e-3", "lr_3e-4"])
    env = VariantLevel(keys=["env_id"], values=[["CartPole-v1"], ["Acrobot-v1"]],
                       dir_names=["cartpole", "acrobot"])
    variants, log_dirs = make_variants(lr, env)
    # 4 variants; log_dirs == ["lr_1e-3/cartpole", "lr_1e-3/acrobot", ...]
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

#: File the launcher writes into each run's log directory (``logger_context`` copies it
#: into the run's ``variant.json``; its ``LAUNCHED_VARIANT`` is this name, and a test keeps
#: the two equal: importing ``tdrl.logging`` here would make ``import tdrl.cli`` load torch).
VARIANT_FILE = "variant_config.json"
#: Longest directory name :func:`safe_dir_name` returns.
MAX_DIR_NAME = 100
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=@-]+")

KeyPath = str | Sequence[str]


class VariantLevel(NamedTuple):
    """One level of a grid: the keys it sets and the combinations of their values.

    Attributes:
        keys: Key paths set by this level, each a tuple of nested keys
            (``("algo", "learning_rate")``) or a dotted string (``"algo.learning_rate"``).
        values: One entry per combination, each a sequence with one value per key (values
            change together inside a level; levels are crossed).
        dir_names: One directory name per combination.
    """

    keys: Sequence[KeyPath]
    values: Sequence[Sequence[Any]]
    dir_names: Sequence[str]


def _key_path(key: KeyPath) -> tuple[str, ...]:
    path = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
    if not path or not all(isinstance(k, str) and k for k in path):
        raise ValueError(f"a variant key must be a dotted string or a tuple of names, got {key!r}")
    return path


def safe_dir_name(text: Any) -> str:
    """``text`` as one directory name that stays inside its parent directory.

    Every run of characters other than ASCII letters, digits and ``. _ + = @ -`` (path
    separators, NUL, spaces, control characters) becomes ``_``; ``""``, ``"."`` and
    ``".."`` become underscores; a name longer than ``MAX_DIR_NAME`` is cut and ends with
    a hash of the whole text, so that long values stay distinct. ``tdrl launch`` names
    variant directories (``lr_3e-4``, ``env_ALE_Pong-v5``) and experiments with it.

    Args:
        text: A config key, a value or a title (anything with a ``str``).

    Returns:
        The directory name.
    """
    original = str(text)
    name = _UNSAFE_CHARS.sub("_", original)
    if name in ("", ".", ".."):
        name = "_" * max(1, len(name))
    if len(name) > MAX_DIR_NAME:
        digest = hashlib.sha1(original.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        name = f"{name[: MAX_DIR_NAME - 9]}-{digest}"
    return name


def check_relative_dir(what: str, path: str) -> str:
    """``path`` if it is a relative path that cannot leave the directory it is joined to.

    Its ``/``-separated parts must be plain names: not empty (no absolute path, no
    ``a//b``), not ``.`` or ``..``, without a backslash or NUL (see :func:`safe_dir_name`
    to make a name from any text).

    Raises:
        ValueError: Naming ``what`` and the offending path.
    """
    parts = str(path).split("/")
    bad = [p for p in parts if p in ("", ".", "..") or "\\" in p or "\0" in p]
    if bad:
        raise ValueError(
            f"{what} {path!r} is not a safe relative directory: {bad[0]!r} could lead outside "
            "the experiment directory (use tdrl.launch.safe_dir_name)"
        )
    return str(path)


def experiment_dir(log_root: str | os.PathLike[str], title: str, log_dirs: Sequence[str]) -> Path:
    """``log_root/title``, once every run directory is checked to lie inside it.

    What :func:`~tdrl.launch.run_experiments` checks before it writes anything: whatever
    the title and the log dirs contain, no run writes outside ``log_root/title``.

    Args:
        log_root: The directory holding experiment directories.
        title: The experiment's directory, relative to ``log_root``.
        log_dirs: Each variant's directory, relative to ``log_root/title``.

    Returns:
        ``Path(log_root) / title`` (not resolved).

    Raises:
        ValueError: ``title`` or a log dir is not a path, contains NUL, or resolves
            (``..``, an absolute path, a symbolic link) outside ``log_root/title``.
    """
    for what, path in [
        ("log_root", log_root),
        ("experiment_title", title),
        *((f"log_dirs[{i}]", d) for i, d in enumerate(log_dirs)),
    ]:
        if not isinstance(path, str | os.PathLike) or "\0" in os.fspath(path):
            raise ValueError(f"{what} must be a path without NUL, got {path!r}")
    root = Path(log_root).resolve()
    exp_dir = Path(log_root) / title
    resolved = exp_dir.resolve()
    if not resolved.is_relative_to(root):
        raise ValueError(
            f"experiment_title {title!r} leads outside log_root {os.fspath(log_root)!r} "
            f"(to {resolved})"
        )
    for i, log_dir in enumerate(log_dirs):
        run_dir = (exp_dir / log_dir).resolve()
        if not run_dir.is_relative_to(resolved):
            raise ValueError(
                f"log_dirs[{i}] {log_dir!r} leads outside the experiment directory "
                f"{str(exp_dir)!r} (to {run_dir})"
            )
    return exp_dir


def make_variants(*levels: VariantLevel) -> tuple[list[dict[str, Any]], list[str]]:
    """Crosses variant levels into every combination, with one log directory each.

    The first level varies slowest; each combination's log directory joins its dir names
    with ``/`` (``"lr_1e-3/cartpole"``).

    Args:
        *levels: The :class:`VariantLevel` s to cross.

    Returns:
        ``(variants, log_dirs)``: nested dicts, and their relative log directories.

    Raises:
        ValueError: A level whose ``values`` and ``dir_names`` differ in length, a
            combination with the wrong number of values, a malformed key, a dir name that
            could lead outside the experiment directory (``..``, an absolute path, a
            backslash or NUL; see :func:`safe_dir_name`), or two combinations with the same
            log directory.
    """
    variants: list[dict[str, Any]] = [{}]
    log_dirs: list[str] = [""]
    for i, level in enumerate(levels):
        keys = [_key_path(k) for k in level.keys]
        if len(level.values) != len(level.dir_names):
            raise ValueError(
                f"variant level {i}: {len(level.values)} values but "
                f"{len(level.dir_names)} dir_names"
            )
        for name in level.dir_names:
            check_relative_dir(f"variant level {i}: dir name", name)
        next_variants, next_dirs = [], []
        for variant, log_dir in zip(variants, log_dirs, strict=True):
            for values, name in zip(level.values, level.dir_names, strict=True):
                if len(values) != len(keys):
                    raise ValueError(
                        f"variant level {i}: combination {name!r} has {len(values)} values "
                        f"for {len(keys)} keys"
                    )
                new = copy.deepcopy(variant)
                for path, value in zip(keys, values, strict=True):
                    node = new
                    for k in path[:-1]:
                        node = node.setdefault(k, {})
                    node[path[-1]] = value
                new_dir = f"{log_dir}/{name}" if log_dir else str(name)
                if new_dir in next_dirs:
                    raise ValueError(f"variant level {i}: log dir {new_dir!r} is not unique")
                next_variants.append(new)
                next_dirs.append(new_dir)
        variants, log_dirs = next_variants, next_dirs
    return variants, log_dirs


def update_config(default: Any, variant: Mapping[str, Any]) -> Any:
    """Deep-merges ``variant`` into ``default``; every variant key must exist in ``default``.

    ``default`` may be a dict or a dataclass instance (nested ones too); neither it nor
    ``variant`` is changed.

    Args:
        default: The default config.
        variant: Nested dict of the entries to change.

    Returns:
        A new config of ``default``'s type with the variant's values.

    Raises:
        KeyError: A variant key absent from ``default``; the message names the full key
            path (``"algo.lr"``).
        TypeError: A variant dict where ``default`` holds a plain value, or the reverse.
    """
    return _merge(default, variant, "")


def _merge(default: Any, variant: Mapping[str, Any], prefix: str) -> Any:
    is_dataclass = dataclasses.is_dataclass(default) and not isinstance(default, type)
    if is_dataclass:
        known = [f.name for f in dataclasses.fields(default)]
    elif isinstance(default, Mapping):
        known = list(default)
    else:
        raise TypeError(f"update_config: the default at {prefix or '<root>'!r} is not a dict")
    changes: dict[str, Any] = {}
    for key, value in variant.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in known:
            raise KeyError(
                f"unknown config key {path!r}: not in the default config "
                f"(known at {prefix or '<root>'!r}: {', '.join(map(str, known))})"
            )
        current = getattr(default, key) if is_dataclass else default[key]
        nested = isinstance(current, Mapping) or (
            dataclasses.is_dataclass(current) and not isinstance(current, type)
        )
        if isinstance(value, Mapping) != nested:
            raise TypeError(
                f"config key {path!r}: the variant gives a {type(value).__name__} where the "
                f"default has a {type(current).__name__}"
            )
        changes[key] = _merge(current, value, path) if nested else copy.deepcopy(value)
    if is_dataclass:
        return dataclasses.replace(default, **changes)
    new = copy.deepcopy(dict(default))
    new.update(changes)
    return new


def save_variant(variant: Mapping[str, Any], log_dir: str | os.PathLike[str]) -> Path:
    """Writes ``variant`` to ``log_dir/variant_config.json`` (creating ``log_dir``).

    Returns:
        The file's path.
    """
    path = Path(log_dir) / VARIANT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(variant, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: a run starting now reads the old or the new file
    return path


def load_variant(log_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads ``log_dir/variant_config.json`` (written by the launcher before the run).

    Raises:
        FileNotFoundError: ``log_dir`` has no variant file.
    """
    return json.loads((Path(log_dir) / VARIANT_FILE).read_text())
