"""Sphinx configuration for tdrl's documentation.

Build with ``make docs`` or ``python -m sphinx -b html docs docs/_build/html``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repository root, so autodoc imports the working tree's ``tdrl``.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tdrl

project = "tdrl"
author = "tdrl contributors"
copyright = "tdrl contributors"  # noqa: A001 - Sphinx's name
release = tdrl.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# Google-style docstrings (STYLE.md); no NumPy style in this code base.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_class_signature = "separated"
# Do not show third-party docstrings (gymnasium.Env.step, nn.Module.forward) on tdrl
# classes that override a method without documenting it.
autodoc_inherit_docstrings = False

# MyST: heading anchors let Markdown pages link to sections (``file.md#section``).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"tdrl {release}"


def _drop_builtin_type_docstrings(app, what, name, obj, options, lines) -> None:
    """Module constants without a doc comment (``tdrl.keys.OBSERVATION = "observation"``)
    would otherwise show the docstring of ``str`` or ``tuple``."""
    if what in ("data", "attribute") and isinstance(obj, str | tuple | int | float):
        type_doc = (type(obj).__doc__ or "").strip().splitlines()
        if lines and type_doc and lines[0].strip() == type_doc[0].strip():
            lines.clear()


def setup(app) -> None:
    app.connect("autodoc-process-docstring", _drop_builtin_type_docstrings)
