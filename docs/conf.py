"""Sphinx configuration of fabric-mux's site: ``inv docs`` builds it into docs/_build/html."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "_ext")]

import fabric_mux  # noqa: E402

project = "fabric-mux"
author = "the fabric-mux authors"
copyright = "the fabric-mux authors"
version = release = fabric_mux.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "myst_parser",
    "muxdocs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
default_role = "code"
# Quotes and ellipses, but no dashes: "--serial" stays two hyphens.
smartquotes_action = "qe"
highlight_language = "none"
pygments_style = "sphinx"

# The API pages follow the code: members in the order written, signatures with
# their types, the docstrings as reST.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = f"fabric-mux {release}"
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_theme_options = {
    "description": "One SSH login per host for Fabric",
    "fixed_sidebar": True,
    "page_width": "1120px",
    "sidebar_width": "230px",
    "show_relbars": True,
    "extra_nav_links": {},
}
html_show_sourcelink = False
html_show_copyright = False
html_copy_source = False
