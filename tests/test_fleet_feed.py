"""A feed line back into a Snapshot (``tokentop.fleet.feed``): the inverse of snapshot_json,
checked against what a hostile or mismatched remote can send."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from tokentop.config import CostConfig
from tokentop.demo import simulated_snapshots
from tokentop.fleet.feed import MAX_LINE_BYTES, FeedError, LineSplitter, SchemaError, parse_line
from tokentop.fleet.ssh_command import failure_reason, remote_command, split_target
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
        (0, [], "the feed ended"),
        (1, ["\x1b[31mboom"], "the feed ended (exit 1): \ufffd[31mboom"),
    ],
)
def test_why_a_feed_ended_comes_from_ssh_and_its_stderr(code: int, stderr: list[str], start: str) -> None:
    assert failure_reason(code, stderr).startswith(start)
