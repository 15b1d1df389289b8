"""The shell commands of README.md and docs/*.md use options that exist.

Every ``tdrl ...`` line of a ``bash`` block (continuation lines joined, comments dropped)
parses with the ``tdrl`` command line's own parser, and a ``tdrl train`` line's preset
resolves; every option of a ``python tdrl_examples/example_N.py ...`` line is in that
example's ``--help``. Nothing is trained (the examples and ``tdrl train`` are smoke-run in
``tests/test_examples.py``).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tdrl.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(program: str) -> list[tuple[str, list[str]]]:
    """``(page:line, argv)`` of every ``program ...`` line in the pages' shell blocks."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.finditer(r"^```(?:bash|sh|console)\n(.*?)^```", text, re.S | re.M):
            first = text[: block.start()].count("\n") + 2
            lines = block.group(1).replace("\\\n", " ").split("\n")
            for offset, line in enumerate(lines):
                argv = shlex.split(line, comments=True)
                if argv[: len(program.split())] == program.split():
                    where = f"{page.relative_to(ROOT)}:{first + offset}"
                    found.append((where, argv[len(program.split()) :]))
    return found


TDRL = _commands("tdrl")
EXAMPLES = [
    (where, argv) for where, argv in _commands("python") if argv[0].startswith("tdrl_examples/")
]


def test_the_docs_have_commands():
    assert len(TDRL) >= 20 and len(EXAMPLES) >= 2, (TDRL, EXAMPLES)


@pytest.mark.parametrize(("where", "argv"), TDRL, ids=[w for w, _ in TDRL])
def test_docs_tdrl_command_parses(where, argv, capsys):
    if argv[:1] == ["launch"] and "--" in argv:  # as tdrl.cli.main: the rest goes to each run
        argv = argv[: argv.index("--")]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        if exit_.code == 0 and "--help" in argv:  # `tdrl train --help`
            return
        raise AssertionError(
            f"{where}: tdrl {shlex.join(argv)}\n{capsys.readouterr().err}"
        ) from None
    if args.command == "train":
        from tdrl.cli_train import _preset

        _preset(args)  # an unknown --preset or pair is refused here


@pytest.mark.timeout(300)
def test_docs_example_commands_use_options_the_example_has():
    helps: dict[str, str] = {}
    wrong = []
    for where, argv in EXAMPLES:
        script = argv[0]
        if script not in helps:
            proc = subprocess.run(
                [sys.executable, script, "--help"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, f"{script} --help: {proc.stderr[-2000:]}"
            helps[script] = proc.stdout
        options = [a.split("=")[0] for a in argv[1:] if a.startswith("--")]
        missing = [o for o in options if not re.search(rf"{re.escape(o)}\b", helps[script])]
        if missing:
            wrong.append(f"{where}: {script} has no {missing}")
    assert not wrong, "\n".join(wrong)
