"""Rolling runs' decisions: batch sizes, the failure budget, the summary folded,
gathered output's blocks, the report's data. (Against servers: test_fleet_ops.py.)"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from fabric_mux.config import mux_settings
from fabric_mux.exceptions import BadConfig
from fabric_mux.failedhosts import FailedHosts
from fabric_mux.gather import Gathered
from fabric_mux.parallel import HostReport, summary
from fabric_mux.rollout import BatchSize, Budget, batched, parse_budget, parse_serial
from fabric_mux.runreport import RunRecord, report_data, write_report


@pytest.mark.parametrize(
    ("given", "sizes"),
    [
        (None, None),
        ("", None),
        (5, (BatchSize(5),)),
        ("5", (BatchSize(5),)),
        ("20%", (BatchSize(20, True),)),
        ("1,10%,100%", (BatchSize(1), BatchSize(10, True), BatchSize(100, True))),
        ([1, "50%"], (BatchSize(1), BatchSize(50, True))),
    ],
)
def test_serial_takes_ansibles_forms(given: object, sizes: object) -> None:
    assert parse_serial(given) == sizes


@pytest.mark.parametrize("given", [0, "0", "-1", "101%", "ten", "1,,2", [True], 1.5])
def test_a_bad_serial_is_one_line_naming_the_key(given: object) -> None:
    with pytest.raises(BadConfig, match=r"^mux\.serial takes a number of hosts a batch"):
        mux_settings({"mux": {"serial": given}})


def test_batches_repeat_the_last_size_and_percentages_round_down_to_one_at_least() -> None:
    hosts = [f"h{n}" for n in range(1, 11)]
    assert batched(hosts, None) == [hosts]
    assert batched([], parse_serial(3)) == []
    assert [len(b) for b in batched(hosts, parse_serial(3))] == [3, 3, 3, 1]
    assert [len(b) for b in batched(hosts, parse_serial("1,25%,100%"))] == [1, 2, 7]
    assert [len(b) for b in batched(hosts, parse_serial("5%"))] == [1] * 10
    assert [h for b in batched(hosts, parse_serial("1,30%")) for h in b] == hosts  # in order


def test_the_budget_counts_hosts_or_a_share_of_those_started() -> None:
    assert parse_budget(None) is None and parse_budget("") is None
    assert parse_budget("2") == Budget(2) and parse_budget("10%") == Budget(10, True)
    assert not Budget(2).exceeded(2, 40) and Budget(2).exceeded(3, 40)
    assert not Budget(0, True).exceeded(0, 5) and Budget(0).exceeded(1, 1)
    # A canary of one that fails is over any percentage short of 100%.
    assert Budget(10, True).exceeded(1, 1)
    assert not Budget(10, True).exceeded(4, 40) and Budget(10, True).exceeded(5, 40)
    with pytest.raises(BadConfig, match=r"^mux\.max_fail takes a number of hosts"):
        mux_settings({"mux": {"max_fail": "many"}})


def test_the_summary_folds_hosts_by_outcome() -> None:
    reports = {f"web{n:02d}": HostReport(f"web{n:02d}", 1.0, batch=1) for n in range(1, 9)}
    reports["web03"].failed_in, reports["web03"].why = "deploy", "UnexpectedExit: 'x' exited with 1"
    reports["web04"].stopped = ["restart"]
    for n in (7, 8):
        reports[f"web{n:02d}"].batch = 0
    said = summary(reports, ["deploy", "restart"], [6, 2], "the run stopped: 1 of 6 ...")
    assert said.splitlines() == [
        "fabric-mux: deploy, restart on 8 hosts in parallel, in 2 batches (6, 2)",
        "  ok           web[01-02,05-06] (4)",
        "  failed       web03 (1)  in deploy: UnexpectedExit: 'x' exited with 1",
        "  stopped      web04 (1)  did not run restart",
        "  not started  web[07-08] (2)",
        "the run stopped: 1 of 6 ...",
        "1 of 8 hosts failed, 1 stopped, 2 not started",
    ]


def test_gathered_output_is_one_block_a_distinct_output() -> None:
    gathered = Gathered()
    for n in range(1, 6):
        sink = gathered.host(f"web{n}")
        sink.write_lines(sys.stdout, ["up 3 days"] if n != 4 else ["down"])
        if n == 5:
            sink.write_lines(sys.stderr, ["warning"])
    gathered.host("web6")  # printed nothing: not shown
    out, err = io.StringIO(), io.StringIO()
    gathered.show(out, err, [f"web{n}" for n in range(1, 7)])
    rule = "-" * 15
    assert out.getvalue().splitlines() == [
        rule, "web[1-3] (3)", rule, "| up 3 days",
        rule, "web4 (1)", rule, "| down",
        rule, "web5 (1)", rule, "| up 3 days",
    ]  # fmt: skip
    assert err.getvalue() == "| warning\n"


def test_gathered_outputs_are_grouped_as_sent_and_never_look_alike() -> None:
    gathered = Gathered()
    said = {
        "r1": ["---------------", "r2 (1)", "---------------", "mine"],  # a forged heading
        "r2": ["\x1b"],  # a real escape byte
        "r3": ["\\e"],  # the text \e
        "r4": ["ok "],
        "r5": ["ok"],
        "r6": ["a\u00a0b"],  # a no-break space
        "r7": ["a b"],
        "r8": ["\u200b"],  # a zero-width space
        "r9": [""],
    }
    for host, lines in said.items():
        gathered.host(host).write_lines(sys.stdout, lines)
    out = io.StringIO()
    gathered.show(out, io.StringIO(), list(said))
    rule = "-" * 15
    assert out.getvalue().splitlines() == [
        rule, "r1 (1)", rule, "| ---------------", "| r2 (1)", "| ---------------", "| mine",
        rule, "r2 (1)", rule, "| \\e",
        rule, "r3 (1)", rule, "| \\\\e",
        rule, "r4 (1)", rule, "| ok\\x20",
        rule, "r5 (1)", rule, "| ok",
        rule, "r6 (1)", rule, "| a\\xa0b",
        rule, "r7 (1)", rule, "| a b",
        rule, "r8 (1)", rule, "| \\u200b",
        rule, "r9 (1)", rule, "| ",
    ]  # fmt: skip
    bodies = [line for line in out.getvalue().splitlines() if line.startswith("| ")]
    assert len(set(bodies[4:])) == len(said) - 1  # after r1's four lines, no two alike


def test_a_report_goes_neither_through_a_link_nor_over_a_device(tmp_path: Path) -> None:
    """A link is refused, never followed: planted in a folder others may write, it
    would have root's report replace the file it names. A fifo (or a device:
    /dev/null, as root) is not replaced by a file; ``-`` is no file."""
    record = RunRecord(["fabmux", "-H", "web1"], 100.0, 101.0, ["deploy"])
    reports = [HostReport("web1", 1.0, batch=1)]
    secret = tmp_path / "secret"
    secret.write_text("precious\n")
    link = tmp_path / "report.json"
    link.symlink_to(secret)
    with pytest.raises(OSError, match="it is a link"):
        write_report(str(link), record, reports)
    assert link.is_symlink() and secret.read_text() == "precious\n"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="is not a regular file"):
        write_report(str(fifo), record, reports)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(OSError, match="give a file's path"):
        write_report("-", record, reports)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "report.json", "secret"]
    written = write_report(str(tmp_path / "new.json"), record, reports)
    assert json.loads(written.read_text())["hosts"][0]["host"] == "web1"


def test_the_report_and_the_failed_hosts_file(tmp_path: Path) -> None:
    reports = [
        HostReport("web1", 1.5, batch=1),
        HostReport("web2", 0.5, "deploy", "Exit: no", batch=1, exit_code=3, stderr_tail="boom"),
        HostReport("web\x1b[2J3", batch=0),
    ]
    data = report_data(RunRecord(["fabmux", "-P"], 100.0, 102.5, ["deploy"]), reports)
    assert data["schema"] == "fabric-mux-run/1" and data["seconds"] == 2.5
    assert data["counts"] == {
        "ok": 1, "failed": 1, "interrupted": 0, "stopped": 0, "not started": 1
    }  # fmt: skip
    hosts = json.loads(json.dumps(data))["hosts"]
    assert hosts[1] == {
        "host": "web2",
        "status": "failed",
        "batch": 1,
        "seconds": 0.5,
        "failed_task": "deploy",
        "exit_code": 3,
        "reason": "Exit: no",
        "stderr_tail": "boom",
        "skipped": [],
        "not_run": [],
    }
    written = tmp_path / "state" / "failed"
    said = FailedHosts(str(written)).conclude(reports, ["fabmux", "-P"])
    assert said == f"their list: {written}; to run on them again: -H @{written}\n"
    lines = written.read_text().splitlines()
    assert [line.split("#")[0].strip() for line in lines if not line.startswith("#")] == [
        "web2",
        "web\\e[2J3",
    ]
    assert written.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_the_report_is_ascii_with_controls_escaped(tmp_path: Path) -> None:
    reports = [HostReport("web\u202e1", 1.0, "deploy", "Exit: \x9b2J\u200bgone", batch=1)]
    record = RunRecord(["fabmux", "-H", "web\u202e1"], 100.0, 101.0, ["deploy"])
    written = write_report(str(tmp_path / "report.json"), record, reports)
    raw = written.read_bytes()
    assert raw.isascii()  # no raw bidi or C1 control for a terminal or editor to act on
    assert "\\u202e" in raw.decode() and "\\u009b" in raw.decode()
    data = json.loads(raw)
    assert data["hosts"][0]["host"] == "web\u202e1"
    assert data["hosts"][0]["reason"] == "Exit: \x9b2J\u200bgone"
