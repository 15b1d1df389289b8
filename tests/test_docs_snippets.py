"""Every Python code block of README.md and docs/*.md runs as a reader would paste it.

Each block runs alone in a child process, in a scratch directory, with its training budgets
cut (``n_steps=...`` -> 1,000 steps, ``log_interval_steps=...`` -> 500) and ``__name__``
not ``"__main__"`` (a launchable script's ``main()`` is defined, not run), after the
import lines of the blocks above it on its page (what a reader has already pasted). A block
that is a fragment of its page stops at the first name it leaves to its context; that name
must be one of its page's ``CONTEXT``, so an import, a renamed argument or a wrong call in
any block fails.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Per page, the names its fragments take from the text around them (a block that needs
#: one stops there): any other undefined name fails the block.
CONTEXT: dict[str, set[str]] = {
    "README.md": {"algo"},  # the runners' block: an algorithm built as above
    "docs/gpus.md": {"algo"},
    "docs/launching.md": {"variants"},  # the sweep block runs the variants built above
    "docs/quickstart.md": {"algo"},  # resuming example 1's run
    "docs/sync_rl.md": {"algo"},
    "docs/torchrl.md": {"samples"},  # a TorchRL buffer fed a sampler batch
}

RUNNER = r"""
import re, sys, torch
torch.set_num_threads(1)
source = open(sys.argv[1]).read()
source = re.sub(r"\bn_steps=[\d_]+", "n_steps=1_000", source)
source = re.sub(r"\blog_interval_steps=[\d_]+", "log_interval_steps=500", source)
try:
    exec(compile(source, sys.argv[1], "exec"), {"__name__": "__snippet__"})
except NameError as err:
    print("NAME-LEFT-TO-CONTEXT:", err.name)
"""


def _blocks() -> list[tuple[str, str]]:
    """``(page:line, source)`` of every block, the page's earlier import lines first."""
    found = []
    for page in PAGES:
        text, imports = page.read_text(), []
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            line = text[: m.start()].count("\n") + 1
            found.append((f"{page.relative_to(ROOT)}:{line}", "".join(imports) + m.group(1)))
            imports += re.findall(r"^(?:from \S+ import [^(\n]+|import \S+)\n", m.group(1), re.M)
    return found


BLOCKS = _blocks()


def test_the_docs_have_python_blocks():
    assert len(BLOCKS) >= 15, [where for where, _ in BLOCKS]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("where", "source"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_docs_block_runs(where, source, tmp_path):
    path = tmp_path / "block.py"
    path.write_text(source)
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, f"{where}:\n{proc.stderr[-3000:]}"
    left = re.findall(r"^NAME-LEFT-TO-CONTEXT: (\S+)$", proc.stdout, flags=re.M)
    page = where.rsplit(":", 1)[0]
    assert set(left) <= CONTEXT.get(page, set()), f"{where} uses {left}, defined nowhere above"
