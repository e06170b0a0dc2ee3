"""A feed line back into a Snapshot (``tokentop.fleet.feed``): the inverse of snapshot_json,
checked against what a hostile or mismatched remote can send; how ssh is run and ended
(``ssh_command``, ``ssh_summary.run_bounded``); the feeds' past as graph points (``ssh``)."""

from __future__ import annotations

import json
import sys
import tracemalloc
import uuid
from typing import Any

import psutil
import pytest

from tokentop.config import Config, CostConfig, SshHostConfig
from tokentop.demo import simulated_snapshots
from tokentop.fleet import ssh
from tokentop.fleet.feed import MAX_LINE_BYTES, FeedError, LineSplitter, SchemaError, parse_line
from tokentop.fleet.ssh import MAX_SERIES_POINTS, SERIES_KEEP_S, SshSource, series_of
from tokentop.fleet.ssh_command import failure_reason, remote_command, split_target, ssh_argv
from tokentop.fleet.ssh_summary import run_bounded
from tokentop.snapshot_json import SCHEMA_VERSION, snapshot_dict

COST = CostConfig()


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, allow_nan=False).encode()


@pytest.fixture(scope="module")
def demo_dict() -> dict[str, Any]:
    return snapshot_dict(simulated_snapshots(ticks=6, seed=3, cost=COST)[-1], COST)


def _close(a: Any, b: Any, where: str = "") -> None:
    """Equal, but floats to 1e-9 (busy_pct and idle_usd go through their sums and back)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-9), where
    else:
        assert a == b, where


def test_a_snapshot_comes_back_as_it_was_written(demo_dict: dict[str, Any]) -> None:
    snapshot = parse_line(_line(demo_dict), t_mono=123.0)
    assert snapshot.t_mono == 123.0  # the viewer's clock, not the remote's
    assert snapshot.t_wall == demo_dict["time_unix_s"]  # the host's own stamp, kept
    _close(demo_dict, snapshot_dict(snapshot, COST))


def test_a_host_without_gpus_keeps_its_busy_share(demo_dict: dict[str, Any]) -> None:
    """Its deriver counts the host as one watched unit: 0 GPUs must not make the share vanish."""
    data = json.loads(json.dumps(demo_dict))
    data["gpus"], data["host"]["gpu_count"] = [], 0
    data["host"]["cost_window"]["busy_pct"] = 40.0
    window = parse_line(_line(data), 0.0).host.cost_window
    assert window.busy_share == pytest.approx(0.4)
    assert window.busy_s == pytest.approx(0.4 * window.span_s)


def test_a_first_tick_without_rates_is_read(demo_dict: dict[str, Any]) -> None:
    first = snapshot_dict(simulated_snapshots(ticks=1, seed=3, cost=COST)[0], COST)
    assert parse_line(_line(first), 0.0).dt_s is None


def test_another_schema_version_is_named_in_one_line(demo_dict: dict[str, Any]) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_line(_line({**demo_dict, "schema_version": SCHEMA_VERSION + 1}), 0.0)
    assert str(caught.value) == f"remote tokentop speaks snapshot schema {SCHEMA_VERSION + 1}; this one reads 2"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda d: d.pop("host"), "snapshot.host is missing"),
        (lambda d: d["host"].pop("gpu_count"), "snapshot.host.gpu_count is missing"),
        (lambda d: d["host"].update(gpu_count="8"), "snapshot.host.gpu_count is not a whole number"),
        (
            lambda d: d["host"]["rate_window"].update(tokens_out=True),
            "snapshot.host.rate_window.tokens_out is not a number",
        ),
        (lambda d: d["gpus"][0].update(name=7), "snapshot.gpus[].name is not a string"),
        (lambda d: d.update(gpus={}), "snapshot.gpus is not a list"),
        (lambda d: d["endpoints"].append("x"), "snapshot.endpoints[] is not an object"),
        (lambda d: d.update(gpu_available=1), "snapshot.gpu_available is not true or false"),
        (lambda d: d.pop("schema_version"), "a JSON line without schema_version: not a tokentop snapshot"),
    ],
)
def test_a_wrong_line_gives_one_reason(demo_dict: dict[str, Any], change: Any, reason: str) -> None:
    data = json.loads(json.dumps(demo_dict))
    change(data)
    with pytest.raises(FeedError) as caught:
        parse_line(_line(data), 0.0)
    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"hello", "a line that is not JSON"),
        (b"\xff\xfe{", "a line that is not JSON"),
        (b"[1, 2]", "a line that is not a JSON object"),
        (b'{"schema_version": 2, "time_unix_s": NaN}', "not a finite number: NaN"),
        (b"[" * 100_000, "a line that is not JSON"),
    ],
)
def test_garbage_is_refused_plainly(line: bytes, reason: str) -> None:
    with pytest.raises(FeedError) as caught:
        parse_line(line, 0.0)
    assert str(caught.value) == reason


def test_escape_sequences_in_names_never_come_through(demo_dict: dict[str, Any]) -> None:
    data = json.loads(json.dumps(demo_dict))
    data["endpoints"][0]["name"] = "\x1b]0;pwned\x07llama\x1b[31m"
    data["gpus"][0]["name"] = "H200\x1b[2J\u202e"
    data["messages"] = ["line\nbreak\x9b"]
    snapshot = parse_line(_line(data), 0.0)
    texts = [snapshot.endpoints[0].sample.name, snapshot.gpus[0].sample.name, *snapshot.messages]
    assert all(t.isprintable() for t in texts), texts
    assert "llama" in snapshot.endpoints[0].sample.name


def test_lines_come_out_whatever_the_chunks() -> None:
    stream = b'{"a": 1}\n{"b": 2}\n\n{"c": 3}\n{"partial"'
    for size in (1, 3, 7, len(stream)):
        splitter = LineSplitter()
        lines = [line for i in range(0, len(stream), size) for line in splitter.feed(stream[i : i + size])]
        assert lines == [b'{"a": 1}', b'{"b": 2}', b"", b'{"c": 3}']


def test_a_line_over_the_bound_is_dropped_without_holding_it() -> None:
    splitter = LineSplitter(max_bytes=1024)
    lines = list(splitter.feed(b"x" * 5000 + b"\nok\n" + b"y" * 1025 + b"\nfine\n"))
    assert lines == [b"ok", b"fine"]
    assert splitter.oversized == 2


def test_a_100_mb_line_streams_past_in_bounded_memory() -> None:
    splitter = LineSplitter()
    chunk = b"z" * (1024 * 1024)
    tracemalloc.start()
    try:
        got = []
        for _ in range(100):
            got += splitter.feed(chunk)
        got += splitter.feed(b"\nafter\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [b"after"]
    assert splitter.oversized == 1
    assert peak < MAX_LINE_BYTES + 4 * len(chunk)  # the bound and a chunk or two, never the line


@pytest.mark.parametrize(
    ("target", "split"),
    [
        ("gpu-1", ("gpu-1", None)),
        ("me@gpu-1", ("me@gpu-1", None)),
        ("me@gpu-1:2222", ("me@gpu-1", 2222)),
        ("10.0.0.5:22", ("10.0.0.5", 22)),
        ("[fe80::1]:2200", ("fe80::1", 2200)),
        ("me@[::1]", ("me@::1", None)),
        ("fe80::1", ("fe80::1", None)),  # a bare IPv6 address: no port to take
    ],
)
def test_ssh_targets(target: str, split: tuple[str, int | None]) -> None:
    assert split_target(target) == split


def test_the_remote_command_quotes_tokentops_arguments_not_the_users() -> None:
    command = remote_command("~/venv/bin/tokentop --config ~/tt.toml", ["snapshot", "--interval", "1", "a b;rm"])
    assert command == "~/venv/bin/tokentop --config ~/tt.toml snapshot --interval 1 'a b;rm'"


@pytest.mark.parametrize(
    ("code", "stderr", "start"),
    [
        (127, ["bash: line 1: tokentop: command not found"], "no tokentop on the host"),
        (127, ["sh: 1: tokentop: not found"], "no tokentop on the host"),
        (
            2,
            ["usage: tokentop ...", "tokentop: error: unrecognized arguments: --follow"],
            "the host's tokentop is too old",
        ),
        (255, ["root@gpu-1: Permission denied (publickey)."], "ssh: root@gpu-1: Permission denied (publickey)."),
        (255, [], "ssh failed (exit 255)"),
        (255, ["ssh: connect to host gpu-2 port 22: Connection refused\r\n"], "ssh: connect to host gpu-2"),
        (0, [], "the feed ended"),
        (1, ["\x1b[31mboom"], "the feed ended (exit 1): \ufffd[31mboom"),
    ],
)
def test_why_a_feed_ended_comes_from_ssh_and_its_stderr(code: int, stderr: list[str], start: str) -> None:
    reason = failure_reason(code, stderr)
    assert reason.startswith(start)
    assert "ssh: ssh:" not in reason and reason == reason.strip() and "\r" not in reason


def test_ssh_runs_batch_with_the_destination_after_its_options() -> None:
    argv = ssh_argv(SshHostConfig(ssh="me@gpu-1:2222", command="~/bin/tokentop"), ["snapshot", "--json"])
    assert argv[0] == "ssh" and "BatchMode=yes" in argv and argv[argv.index("-p") + 1] == "2222"
    assert argv[-3:] == ["--", "me@gpu-1", "~/bin/tokentop snapshot --json"]  # never read as an option


def test_a_bounded_run_says_why_it_failed_in_words() -> None:
    missing = run_bounded(["/nonexistent/ssh", "h"], 5.0, 1024)
    assert missing.failure is not None and missing.failure.startswith("cannot run ssh: No such file")
    slow = run_bounded([sys.executable, "-c", "import time; time.sleep(60)"], 0.5, 1024)
    assert slow.failure == "no answer within 0.5 s" and slow.code is None
    fine = run_bounded([sys.executable, "-c", "print('ok')"], 30.0, 1024)
    assert (fine.failure, fine.code, fine.out) == (None, 0, b"ok\n")


def test_an_answer_over_the_bound_ends_the_run_and_all_it_started() -> None:
    """Ended runs take their whole process group along: nothing they started is left behind."""
    marker = f"tokentop-test-{uuid.uuid4().hex}"
    script = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'])\n"
        "while True: sys.stdout.write('x' * 65536)\n"
    )
    ran = run_bounded([sys.executable, "-c", script], 60.0, 1024 * 1024)
    assert ran.failure == "its answer is over 1 MiB: not read"
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or ())]
    assert left == []


# --- the feeds' past as graph points ----------------------------------------------------------


def _point(t: float, tok: float, usd: float | None, watts: float = 1000.0) -> Any:
    return ssh._Point(t, tok, watts, usd)


def test_each_host_counts_once_a_step_whatever_the_jitter() -> None:
    """Readings 1 s apart land two in one step and none in the next: the host's mean, then its
    last step held, so the fleet never doubles a host nor drops it for a step."""
    a = [_point(t, 100.0, 36.0) for t in (10.1, 10.95, 12.05, 13.0, 13.9)]  # none in step 11
    b = [_point(t, 300.0, 72.0) for t in (10.5, 11.5, 12.5, 13.5)]
    series = series_of([a, b], span_s=4.0, step_s=1.0, end=13.99)
    assert series.t_wall == (11.0, 12.0, 13.0, 14.0)  # each point at the end of its step
    assert series.tok_s_out == (400.0, 400.0, 400.0, 400.0)
    assert series.usd_per_hour == (108.0,) * 4 and series.power_w == (2000.0,) * 4


def test_unpriced_hosts_stay_out_of_both_sides_of_the_graphs_cost() -> None:
    priced = [_point(10.5, 100.0, 36.0)]
    unpriced = [_point(10.5, 900.0, None)]
    series = series_of([priced, unpriced], span_s=1.0, step_s=1.0, end=10.9)
    assert series.tok_s_out == (1000.0,) and series.usd_per_hour == (36.0,)
    assert series.priced_tok_s_out == (100.0,)  # $/Mtok = 36 $/h over 100 tok/s, not over 1000


def test_a_long_span_gives_what_is_kept_in_at_most_500_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh.HostFeed, "start", lambda self: None)  # no ssh: the past is put in by hand
    source = SshSource(Config(hosts=(SshHostConfig(ssh="h1"),), interval_s=0.1), wall=lambda: 100_000.0)
    feed = source.feeds[0]
    feed.past.extend(_point(100_000.0 - 0.1 * k, 50.0, 18.0) for k in range(5000, -1, -1))
    week = source.series(7 * 86_400.0)
    assert week is not None and week.span_s == SERIES_KEEP_S  # all it keeps, and it says so
    assert len(week.t_wall) <= MAX_SERIES_POINTS + 1
    assert week.step_s == pytest.approx(SERIES_KEEP_S / MAX_SERIES_POINTS)
    known = [v for v in week.tok_s_out if v is not None]
    assert known and all(v == pytest.approx(50.0) for v in known)
    assert source.series(60.0, host="h2") is None
