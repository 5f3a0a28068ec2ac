"""Host ranges: what pdsh and ClusterShell users write in ``-H`` and host files."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric_mux.exceptions import BadHostList
from fabric_mux.hostlist import expand, expand_all, fold, split_hosts


@pytest.mark.parametrize(
    ("pattern", "hosts"),
    [
        ("web1", ["web1"]),
        ("web[01-03]", ["web01", "web02", "web03"]),
        ("web[1-3,7].dc2", ["web1.dc2", "web2.dc2", "web3.dc2", "web7.dc2"]),
        ("web[08-10]", ["web08", "web09", "web10"]),
        ("web[9-11]", ["web9", "web10", "web11"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("deploy@db[1-2]:2222", ["deploy@db1:2222", "deploy@db2:2222"]),
        ("deploy@[::1]:2222", ["deploy@[::1]:2222"]),
        ("[fe80::1]", ["[fe80::1]"]),
        ("web[5]", ["web5"]),
        ("10.0.0.[1-3]", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        ("[1-2].dc2", ["1.dc2", "2.dc2"]),
    ],
)
def test_ranges_expand(pattern: str, hosts: list[str]) -> None:
    assert expand(pattern) == hosts


@pytest.mark.parametrize(
    ("pattern", "said"),
    [
        ("web[a-c]", "is not numbers and ranges"),
        ("web[3-1]", "goes down"),
        ("web[01-", "a [ with no ]"),
        ("web]1", "a ] with no ["),
        ("web[1-2,]", "is not numbers and ranges"),
        ("web[]", "is not numbers and ranges"),
        ("web[1-1000000]", "more than"),
        # Bare numbers are addresses: an empty ${CLUSTER}[0-3] named 0.0.0.0, this machine.
        ("[0-3]", "its hosts are bare numbers, which are addresses ('0'; 0 is this machine)"),
        ("1[0-3]", "bare numbers"),
        ("[1-2][3-4]", "bare numbers"),
        ("root@[0-2]:22", "bare numbers, which are addresses ('0';"),
        # ...and so is a bare number alone: an empty ${CLUSTER}0.
        ("0", "is a bare number, which is an address (0 is this machine)"),
        ("deploy@0:22", "is a bare number"),
        ("2130706433", "is a bare number"),
        # Other scripts' digits: fullwidth, Arabic-Indic.
        ("web[\uff11-\uff13]", "is not numbers and ranges"),
        ("web[\u0661-\u0663]", "is not numbers and ranges"),
        ("web[1-\u00b2]", "is not numbers and ranges"),
    ],
)
def test_a_bad_range_is_one_line_naming_it(pattern: str, said: str) -> None:
    with pytest.raises(BadHostList, match=re.escape(said)) as raised:
        expand(pattern)
    assert repr(pattern) in str(raised.value) and "\n" not in str(raised.value)


def test_a_number_of_thousands_of_digits_is_one_line() -> None:
    with pytest.raises(BadHostList) as raised:
        expand("web[" + "1" * 5000 + "]")
    assert "a number of 5000 digits, more than 18" in str(raised.value)
    assert len(str(raised.value)) < 300


def test_a_ranges_size_is_counted_before_any_name_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    # h[0-99999]x[0-99999] made 10^10 names, then died of MemoryError.
    def refuse(*parts: object) -> None:
        raise AssertionError("names were made")

    monkeypatch.setattr(itertools, "product", refuse)
    with pytest.raises(BadHostList, match="it names 1000000 hosts, more than 100000"):
        expand("h[0-999]x[0-999]")
    with pytest.raises(BadHostList, match="it names 10000000000 hosts, more than 100000"):
        expand("h[0-99999]x[0-99999]")


@pytest.mark.parametrize("name", ["web\x1b[2J1", "web1\rweb2", "web\x0b1", "a\x85b", "w\x7f"])
def test_a_control_character_in_a_host_name_is_one_line(name: str) -> None:
    with pytest.raises(BadHostList) as raised:
        expand(name)
    assert str(raised.value).startswith(f"the host name {name!r} holds a control character")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "name",
    [
        "web1\u202e",
        "web\u200b1",
        "\ufeffweb1",
        "web\xad1",  # format characters
        "web\xa01",
        "web\u30001",  # spaces that are not ASCII's
        "web\u034f1",
        "web\u31641",
        "web\u28001",
        "web1\ufe0f",  # blank letters and marks
    ],
)
def test_an_invisible_character_in_a_host_name_is_one_line(name: str) -> None:
    """A bidi override or a zero-width space: two names that look alike, and a
    name the failed-hosts file (which shows it escaped) could not give back."""
    with pytest.raises(BadHostList) as raised:
        expand(name)
    said = str(raised.value)
    assert said.startswith("the host name '") and "holds an invisible character" in said
    assert said.isascii()  # the character shown as its escape


def test_a_host_list_splits_on_commas_outside_brackets() -> None:
    assert split_hosts("web[01-03,07],db1, ,db2,") == ["web[01-03,07]", "db1", "db2"]
    assert split_hosts(",") == [] and split_hosts("") == []
    assert expand_all(split_hosts("web[1-2],web2,db1")) == ["web1", "web2", "db1"]


def test_fold_writes_ranges_back() -> None:
    assert fold(["web01", "web02", "web03", "web07"]) == "web[01-03,07]"
    assert fold(["web9", "web10", "web11", "db1"]) == "web[9-11],db1"
    assert fold(["web09", "web10"]) == "web[09-10]"
    assert fold(["a.dc2", "web1.dc2", "web2.dc2"]) == "a.dc2,web[1-2].dc2"
    assert fold(["web1"]) == "web1" and fold([]) == ""
    assert fold(["deploy@[::1]:22", "x"]) == "deploy@[::1]:22,x"
    assert fold(["web1", "web01"]) == "web[1,01]"


names = st.builds(
    lambda prefix, number, width, suffix: f"{prefix}{str(number).zfill(width)}{suffix}",
    st.sampled_from(["web", "db-", "r1n", "h"]),
    st.integers(0, 300),
    st.integers(0, 4),
    st.sampled_from(["", ".dc2", "-a"]),
)


@given(st.lists(names, max_size=40))
def test_fold_and_expand_name_the_same_hosts(hosts: list[str]) -> None:
    assert sorted(expand_all(split_hosts(fold(hosts)))) == sorted(set(hosts))
