"""``tokentop --once``: one reading as plain text, through the real command line on the demo host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

FAST = ("--demo", "--interval", "0.2")  # three ticks take 0.4 s


def once(tmp_path: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -X importtime -m tokentop.cli --once ...`` with its own home (where a history
    would go) and no terminal: standard output is a pipe."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "LANG": "C.UTF-8",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tokentop.cli", "--once", *options],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )


@pytest.fixture(scope="module")
def reading(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    home = tmp_path_factory.mktemp("home")
    return once(home, *FAST), home


def test_once_prints_the_header_and_every_gpu_engine_and_process(
    reading: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, _ = reading
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    lines = out.splitlines()
    assert "8× NVIDIA H200" in lines[0] and re.search(r"\$[0-9.]+/Mtok", lines[1])
    assert re.search(r"out [0-9.]+k? in [0-9.]+k? tok/s", out)  # rates exist: not "warming"
    for index in range(8):
        assert any(re.match(rf"\s+{index}\s+H200\s+\d+%\s+[0-9.]+/134\b", line) for line in lines), index
    for engine in ("llama-70b", "llama-8b", "qwen-32b"):
        assert any(line.startswith(f" {engine} ") and "up" in line for line in lines), engine
    assert any(line.split()[:2] == ["PID", "user"] for line in lines)
    assert any(line.split()[0] == "4000" and "llama-70b" in line for line in lines if line.strip())
    # the demo's processes say what they are (simulated), whatever real process has their PID here
    demo_rows = [line for line in lines if line.split()[:1] in (["4000"], ["4001"], ["4002"])]
    assert len(demo_rows) == 7 and all("simulated by tokentop --demo" in row for row in demo_rows)
    assert "(not visible)" not in out
    assert "\x1b" not in out and "warming" not in out


def test_once_into_a_pipe_keeps_every_column(reading: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    header = next(line for line in reading[0].stdout.splitlines() if line.split()[:2] == ["#", "GPU"])
    for title in ("util%", "mem GiB", "W/limit", "°C", "tok/s", "tok/J", "$/h", "$/Mtok", "engine"):
        assert title in header


def test_once_loads_no_textual_and_keeps_no_history(reading: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, home = reading
    imported = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "tokentop.tui.header_parts" in imported  # the live view's rows and header, as text
    assert not [name for name in imported if name.split(".")[0] == "textual"]
    assert not list(home.rglob("*.db"))


@pytest.mark.parametrize(("options", "env"), [(("--ascii",), {}), ((), {"LANG": "C"})])
def test_once_in_ascii_where_asked_or_where_the_locale_is_not_utf8(
    tmp_path: Path, options: tuple[str, ...], env: dict[str, str]
) -> None:
    result = once(tmp_path, *FAST, *options, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.isascii() and "8x NVIDIA H200" in result.stdout


def test_once_refuses_an_option_it_would_ignore(tmp_path: Path) -> None:
    result = once(tmp_path, "--demo", "--db", str(tmp_path / "h.db"))
    assert result.returncode == 2 and "does not take --db" in result.stderr and result.stdout == ""
