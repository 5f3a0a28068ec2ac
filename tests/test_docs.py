"""The site's generated reference and its link checker, without building the site."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from fabric_mux.main import SWITCHES, VALUE_FLAGS

DOCS = Path(__file__).parent.parent / "docs"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fabmux_page_has_every_flag_fabric_mux_adds_with_its_key() -> None:
    text = "\n".join(_load(DOCS / "_ext" / "reftext.py").fabmux_flags())
    for name, flag in VALUE_FLAGS.items():
        assert f"--{name} {flag.value}" in text
        assert f":confval:`mux.{flag.key}`" in text
    for name, (key, _) in SWITCHES.items():
        assert f"--{name}\n" in text
        assert f":confval:`mux.{key}`" in text
    assert ".. option:: -P, --parallel\n" in text


def test_the_fabric_mux_page_has_every_command_and_no_machine_path() -> None:
    text = "\n".join(_load(DOCS / "_ext" / "reftext.py").fabric_mux_commands())
    for command in ("list", "check", "stop"):
        assert f"\nfabric-mux {command}\n" in text
    assert ".. option:: --control-dir DIR" in text
    assert ".. option:: -F FILE, --ssh-config FILE" in text
    assert "$XDG_RUNTIME_DIR/fabric-mux, else ~/.ssh/fabric-mux" in text


def test_the_report_page_describes_every_field_the_report_has() -> None:
    fields = _load(DOCS / "_ext" / "reftext.py").report_fields()
    page = (DOCS / "reference" / "report.rst").read_text()
    for field in fields:
        name = field.split(".", 1)[-1]
        assert f"``{name}``" in page or f'``"{name}"``' in page, field


def test_the_link_checker_finds_a_missing_page_and_a_missing_anchor(tmp_path: Path) -> None:
    checker = _load(DOCS / "check_links.py")
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#there">ok</a> <a href="sub/page.html#gone">no anchor</a>'
        ' <a href="missing.html">no page</a> <a href="https://example.org/x">outside</a>'
        ' <link href="_static/site.css?v=1"> <a href="#top" id="top">self</a>'
    )
    (tmp_path / "sub" / "page.html").write_text('<h1 id="there">x</h1>')
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "site.css").write_text("")
    broken = {(link, why) for _, link, why in checker.broken_links(tmp_path)}
    assert broken == {
        ("sub/page.html#gone", "no #gone in sub/page.html"),
        ("missing.html", "no such file"),
    }
    assert checker.outside_links(tmp_path) == {"https://example.org/x"}
    assert checker.main([str(tmp_path)]) == 1
