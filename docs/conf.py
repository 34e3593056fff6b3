"""Sphinx configuration: MyST Markdown pages, autodoc with numpy-style docstrings (napoleon), and
docs/_ext/hil_docs.py's directives that generate the CLI and instrument references from hil itself.

    sphinx-build -W -b html docs build/html
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))

project = "hil"
author = "the hil authors"
copyright = "2026, the hil authors"
try:
    from hil import __version__ as release
except ImportError:  # the docs are built against the installed package (pip install .[docs])
    release = ""
version = release

extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "hil_docs"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True          # a class's Attributes section as fields, not second descriptions
autodoc_member_order = "bysource"
autodoc_default_options = {"undoc-members": False}
autodoc_typehints = "description"
html_theme = "alabaster"
html_static_path = []
html_title = "hil: physical learning in electrical circuits"

# Docstrings write the mathematics in plain text (|O|, ||r||, K^-1, w_k): hil_docs escapes it
# for reStructuredText (autodoc-process-docstring), outside literals and tables.
smartquotes = False               # option names keep their two hyphens (--nudge)
