"""Unit tests of the parallel screen: whole lines, each visibly its host's."""

from __future__ import annotations

import io
import sys
from unicodedata import category

import pytest

from fabric_mux.screen import LineWriter, Screen, visible


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("plain text\twith a tab", "plain text\twith a tab"),
        ("ok\r[web2] pwned", "ok\\r[web2] pwned"),
        ("\x1b[2K\x1b[1G[web2] x", "\\e[2K\\e[1G[web2] x"),
        ("bell\x07 del\x7f csi\x9b nul\x00", "bell\\x07 del\\x7f csi\\x9b nul\\x00"),
        ("naïve café ✓", "naïve café ✓"),
        # Shown in a bidi terminal as "[web1] ok: 0 failed", where it says "1 deliaf".
        ("ok: 0\u202e deliaf 1", "ok: 0\\u202e deliaf 1"),
        (
            "\u2066a\u2069 \u200f\u061c \u2028x\u2029",
            "\\u2066a\\u2069 \\u200f\\u061c \\u2028x\\u2029",
        ),
        ("עברית ועربية", "עברית ועربية"),
    ],
)
def test_bytes_that_act_on_a_terminal_are_shown_as_text(line: str, shown: str) -> None:
    assert visible(line) == shown


def test_every_invisible_format_character_is_shown_as_text() -> None:
    # Unicode's category Cf: soft hyphens, zero-width spaces, joiners, tags...
    unseen = [chr(code) for code in range(sys.maxunicode + 1) if category(chr(code)) == "Cf"]
    assert len(unseen) > 150
    for char in unseen:
        code = ord(char)
        width = "x02" if code <= 0xFF else "u04" if code <= 0xFFFF else "U08"
        assert visible(f"a{char}b") == f"a\\{width[0]}{code:0{width[1:]}x}b"
    assert visible("web\u00ad1 \u200b \ufeff") == "web\\xad1 \\u200b \\ufeff"


def test_a_prefix_is_shown_as_text_too() -> None:
    out = io.StringIO()
    writer = LineWriter("[web\u202e\x9b1] ", out, Screen())
    writer.write("one\n")
    assert out.getvalue() == "[web\\u202e\\x9b1] one\n"


def test_lines_are_written_whole_with_the_prefix_and_a_ptys_cr_dropped() -> None:
    out = io.StringIO()
    writer = LineWriter("[web1] ", out, Screen())
    for chunk in ("one\r\ntw", "o", "", "\nthree\rfour\n", "tail"):
        writer.write(chunk)
    assert out.getvalue() == "[web1] one\n[web1] two\n[web1] three\\rfour\n"
    writer.close()
    assert out.getvalue().endswith("[web1] tail\n")


class CountingStr(str):
    """Text that counts how often it is joined onto what came before it."""

    joined = 0

    def __radd__(self, other: str) -> str:
        CountingStr.joined += 1
        return other + str(self)


def test_a_line_with_no_newline_is_kept_in_pieces_not_joined_per_chunk() -> None:
    out = io.StringIO()
    writer = LineWriter("[web1] ", out, Screen())
    CountingStr.joined = 0
    for _ in range(1000):
        writer.write(CountingStr("x" * 100))
    # Joining each chunk onto the line so far copies the line each time: quadratic.
    assert CountingStr.joined == 0
    assert out.getvalue() == ""
    writer.write("\n")
    assert out.getvalue() == "[web1] " + "x" * 100_000 + "\n"
