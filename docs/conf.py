"""Sphinx configuration: MyST Markdown, autodoc for the hook reference, furo, no network."""

from __future__ import annotations

import importlib.metadata

project = "docrelay"
author = "docrelay developers"
copyright = "docrelay developers"
release = importlib.metadata.version("docrelay")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    # The command-line reference (docs/cli.md) is generated from the click commands.
    "sphinx_click",
]
# No sphinx.ext.intersphinx: the docs build offline. References to the standard library are
# therefore listed in nitpick_ignore_regex below instead of being resolved.

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
myst_heading_anchors = 3

# Every cross-reference must resolve (sphinx-build -n -W).
nitpicky = True
nitpick_ignore_regex = [
    # The standard library and third-party types in signatures (no intersphinx offline).
    ("py:class", r"(collections\.abc|typing|types|enum|logging|re|pathlib|threading|ssl)\..*"),
    ("py:class", r"(pluggy|attrs|requests|urllib3)\..*"),
    ("py:class", r"(str|bytes|int|float|bool|dict|list|tuple|type|object|None|Any)"),
    ("py:exc", r"(ValueError|KeyError|Exception|RuntimeError)"),
    # Private names that public docstrings and signatures mention.
    ("py:class", r"(docrelay\.)?(_context\.)?_Services"),
    ("py:data", r"MAX_BODY_BYTES"),
    ("py:attr", r"outcome"),
    ("py:class", r"(docrelay\.)?(Store|EngineSettings|PluginHost)"),
    ("py:class", r"docrelay\._[a-z_]+\..*"),
    ("py:class", r"_pytest\..*"),
]
# The provider pages include the plugins' READMEs, whose links point at repository paths
# outside docs/ (../../core); they are right on GitHub and unresolvable here.
suppress_warnings = ["myst.xref_missing"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"docrelay {release}"

# The doctest builder runs the examples of docstrings (docrelay.helpers and others) with the
# public names in scope, as a reader of the API reference would have them.
doctest_global_setup = """
import docrelay
from docrelay import *
from docrelay.helpers import *
"""
