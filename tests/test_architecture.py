"""The architecture stays as docs/developer.md draws it: imports flow one way, classes stay
shallow, no behaviour is patched in at run time, files keep to one layer.

These tests read tdrl's source (and import its modules); each failure names the file and
the rule it breaks.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import typing
from pathlib import Path

import pytest

import tdrl

ROOT = Path(tdrl.__file__).resolve().parent

#: The import order, bottom first: a module may import from its own package and from
#: packages of a lower layer only. Packages of one layer never import each other
#: (samplers and algorithms side by side).
LAYERS: dict[str, int] = {
    "_compat": 0,
    "keys": 0,
    "utils": 1,
    "envs": 2,
    "models": 2,
    "logging": 2,
    "agents": 3,
    "replays": 3,
    "samplers": 4,
    "algos": 4,
    "testing": 4,
    "runners": 5,
    "launch": 6,
    "cli": 7,
}

#: Longest module without a reason for its length written in its docstring.
MAX_LINES = 450


def _modules() -> list[tuple[str, Path]]:
    """``(dotted name, path)`` of every module in tdrl."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(parts), path))
    return found


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, imported tdrl module)`` of every import in a file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "tdrl"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.split(".")[0] != "tdrl":
                continue
            if name == "tdrl":  # from tdrl import keys
                out += [(node.lineno, f"tdrl.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, name))
    return out


def _package(module: str) -> str | None:
    """The top-level tdrl package of a module (``tdrl.algos.dqn.dqn`` -> ``algos``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer():
    packages = {_package(m) for m, _ in _modules()} - {None}
    assert packages <= set(LAYERS), sorted(packages - set(LAYERS))


def test_imports_flow_one_way():
    wrong = []
    for module, path in _modules():
        src = _package(module)
        for line, target in _imports(path, module):
            dst = _package(target)
            if src is None:
                wrong.append(f"{path.name}:{line} tdrl/__init__ imports {target}")
            elif dst is not None and dst != src and LAYERS[dst] >= LAYERS[src]:
                wrong.append(f"{module}:{line} imports {target} ({src} -> {dst})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_a_role_base_imports_none_of_its_variants():
    wrong = []
    for module, path in _modules():
        if path.name != "base.py":
            continue
        role = module.rpartition(".")[0]
        for line, target in _imports(path, module):
            if target.startswith(role + ".") and target != module:
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "a base.py states an interface; it imports no variant:\n" + "\n".join(wrong)


def _all_classes() -> list[type]:
    classes = []
    for info in pkgutil.walk_packages(tdrl.__path__, "tdrl."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == info.name:
                classes.append(obj)
    return classes


def _is_protocol(cls: type) -> bool:
    return bool(getattr(cls, "_is_protocol", False)) or cls is typing.Protocol


def test_at_most_one_in_project_base_class():
    deep = []
    for cls in _all_classes():
        bases = [
            b for b in cls.__mro__[1:] if b.__module__.startswith("tdrl.") and not _is_protocol(b)
        ]
        if len(bases) > 1:
            deep.append(f"{cls.__module__}.{cls.__qualname__}: {[b.__name__ for b in bases]}")
    assert not deep, "classes more than one in-project base deep:\n" + "\n".join(deep)


def test_no_run_time_patching_through_vars():
    found = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            for target in targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Call)
                    and getattr(target.value.func, "id", None) == "vars"
                ):
                    found.append(f"{module}:{node.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "pop"
                and isinstance(node.func.value, ast.Call)
                and getattr(node.func.value.func, "id", None) == "vars"
            ):
                found.append(f"{module}:{node.lineno}")
    assert not found, "vars(obj)[...] patches behaviour at run time:\n" + "\n".join(found)


def test_long_modules_say_why():
    long = []
    for module, path in _modules():
        n_lines = len(path.read_text().splitlines())
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if n_lines > MAX_LINES and f"over {MAX_LINES} lines" not in doc:
            long.append(f"{module}: {n_lines} lines")
    assert not long, (
        f"modules over {MAX_LINES} lines without 'over {MAX_LINES} lines' and the reason "
        "in their docstring:\n" + "\n".join(long)
    )


@pytest.mark.parametrize(
    ("package", "names"),
    [
        ("tdrl.algos", ["A2C", "PPO", "DQN", "CategoricalDQN", "DDPG", "TD3", "SAC", "SAC_V"]),
        (
            "tdrl.agents",
            [
                "CategoricalPgAgent",
                "GaussianPgAgent",
                "DqnAgent",
                "DdpgAgent",
                "Td3Agent",
                "SacAgent",
                "SacVAgent",
            ],
        ),
        ("tdrl.samplers", ["SerialSampler", "CpuSampler", "GpuSampler", "AlternatingSampler"]),
        ("tdrl.runners", ["MinibatchRl", "MinibatchRlEval", "AsyncRl", "SyncRl"]),
        ("tdrl.replays", ["ReplayBuffer", "FrameReplayBuffer", "ReplayConfig"]),
    ],
)
def test_every_public_piece_is_importable_from_its_role_package(package, names):
    module = importlib.import_module(package)
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{package} does not export {missing}"
    assert set(names) <= set(module.__all__)


def test_every_module_has_an_api_page_entry():
    docs = " ".join(p.read_text() for p in (ROOT.parent / "docs" / "api").glob("*.rst"))
    listed = set(re.findall(r"automodule:: (\S+)", docs))
    missing = [
        module
        for module, path in _modules()
        if path.name != "__init__.py"
        and module not in ("tdrl._compat", "tdrl.cli")
        and module not in listed
    ]
    assert not missing, f"modules without an automodule entry in docs/api/*.rst: {missing}"
