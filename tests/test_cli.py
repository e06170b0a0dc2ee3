"""The headless commands as a user runs them: real processes, real loopback servers, real files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest
from loopback import LoopbackServer, Reply

from tokentop.cli import main
from tokentop.config import Config, EndpointConfig
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler

VLLM_PAGE = "\n".join(
    [
        "# TYPE vllm:prompt_tokens_total counter",
        'vllm:prompt_tokens_total{{engine="0",model_name="m"}} {prompt}.0',
        "# TYPE vllm:generation_tokens_total counter",
        'vllm:generation_tokens_total{{engine="0",model_name="m"}} {gen}.0',
        'vllm:num_requests_running{{engine="0",model_name="m"}} 3.0',
        'vllm:num_requests_waiting{{engine="0",model_name="m"}} 1.0',
        'vllm:kv_cache_usage_perc{{engine="0",model_name="m"}} 0.25',
        "",
    ]
)


def tokentop(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tokentop.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def counting_vllm(server: LoopbackServer, step: int = 100) -> None:
    """A vLLM page whose counters grow by ``step`` generated tokens per scrape."""
    server.route(
        "/metrics",
        lambda seen: Reply(
            body=VLLM_PAGE.format(prompt=len(server.requests) * step // 2, gen=len(server.requests) * step)
        ),
    )


def test_snapshot_json_demo_prints_every_figure_with_units() -> None:
    result = tokentop("snapshot", "--json", "--demo")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == 2
    host = data["host"]
    assert host["gpu_count"] == 8
    rate = host["rate_window"]
    # Three engines at 30-100 % of 8,700 tok/s peak output; 8 GPUs between idle and 700 W.
    assert 0 < rate["tok_s_out"] < 8700 and rate["tok_s_in"] > rate["tok_s_out"]
    assert 8 * 72 * 0.99 < rate["power_w"] < 8 * 700
    # Eight H200s at the built-in $3.50; a cloud rate already pays for power (issue 9, item 16).
    assert host["cost_window"]["usd_per_mtok"] > 0 and host["usd_per_hour_now"] == pytest.approx(8 * 3.5)
    assert data["cost_inputs"]["energy_in_rate"] is True
    assert host["cost_window"]["tok_per_j"] > 0
    idle = data["gpus"][7]
    assert idle["engines"] == [] and idle["cost_window"]["usd_per_mtok"] is None
    assert {e["kind"] for e in data["endpoints"]} == {"vllm"}
    assert all(e["status"] == "up" for e in data["endpoints"])


def test_record_demo_leaves_about_ten_ticks_per_gpu(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    result = tokentop("record", "--demo", "--duration", "10", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    conn = sqlite3.connect(db)
    per_gpu = conn.execute("SELECT COUNT(*) FROM gpu_ticks GROUP BY gpu_id").fetchall()
    assert len(per_gpu) == 8 and all(9 <= n <= 11 for (n,) in per_gpu)
    assert conn.execute("SELECT COUNT(*) FROM sessions WHERE ended_at IS NOT NULL").fetchone() == (1,)


def test_snapshot_and_record_against_a_real_endpoint_report_its_kind_and_counters(tmp_path: Path) -> None:
    with LoopbackServer() as server:
        counting_vllm(server)
        result = tokentop("snapshot", "--json", "--endpoint", server.url, "--interval", "0.3")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        (endpoint,) = data["endpoints"]
        assert endpoint["kind"] == "vllm" and endpoint["status"] == "up"
        assert endpoint["generation_tokens_counter"] > 0 and endpoint["requests_running"] == 3
        assert endpoint["kv_cache_pct"] == pytest.approx(25)
        assert endpoint["session_tokens_out"] > 0
        # No GPU on this machine: said once, plainly, and everything else still works.
        assert data["gpu_available"] is False and "driver" in data["gpu_unavailable_reason"]

        db = tmp_path / "r.db"
        result = tokentop("record", "--endpoint", server.url, "--db", str(db), "--duration", "2", "--interval", "0.5")
        assert result.returncode == 0, result.stderr
        rows = (
            sqlite3.connect(db)
            .execute("SELECT kind, status, generation_tokens_raw FROM endpoint_ticks_v ORDER BY t")
            .fetchall()
        )
        assert len(rows) >= 3 and rows[-1][0] == "vllm" and rows[-1][1] == "up"
        assert rows[-1][2] > rows[0][2]


def test_bearer_token_is_sent_and_never_stored_logged_or_printed(tmp_path: Path) -> None:
    secret = "sk-tokentop-test-5ecret-value"
    db = tmp_path / "s.db"
    with LoopbackServer() as server:

        def guarded(seen):
            if seen.headers.get("authorization") != f"Bearer {secret}":
                return Reply(status=401, body="unauthorized")
            return Reply(body=VLLM_PAGE.format(prompt=1, gen=len(server.requests)))

        server.route("/metrics", guarded)
        result = tokentop(
            "record",
            "-v",
            "--endpoint",
            f"{server.url},token_env=TT_SECRET",
            "--db",
            str(db),
            "--duration",
            "1.5",
            "--interval",
            "0.5",
            env={"TT_SECRET": secret},
        )
        assert result.returncode == 0, result.stderr
        assert any(s.headers.get("authorization") == f"Bearer {secret}" for s in server.requests)
        snap = tokentop(
            "snapshot",
            "--json",
            "--endpoint",
            f"{server.url},token_env=TT_SECRET",
            "--interval",
            "0.3",
            env={"TT_SECRET": secret},
        )
    assert json.loads(snap.stdout)["endpoints"][0]["status"] == "up"
    for text in (result.stdout, result.stderr, snap.stdout, snap.stderr):
        assert secret not in text
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes()
    assert "TT_SECRET" in sqlite3.connect(db).execute("SELECT config_json FROM sessions").fetchone()[0]


def test_record_refuses_an_unusable_database_with_one_clear_line(tmp_path: Path) -> None:
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("these are my notes, not a database\n" * 100)
    result = tokentop("record", "--demo", "--duration", "1", "--db", str(not_a_db))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "not" in result.stderr and str(not_a_db) in result.stderr
    assert not_a_db.read_text().startswith("these are my notes")  # nothing lost

    # A directory that cannot exist (a file stands where it should), unwritable even for root.
    result = tokentop("record", "--demo", "--duration", "1", "--db", str(not_a_db / "sub" / "h.db"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "cannot record" in result.stderr


def test_record_without_history_is_refused(capsys) -> None:
    assert main(["record", "--demo", "--no-history"]) == 2
    assert "--no-history" in capsys.readouterr().err


def test_sigterm_during_record_ends_cleanly_and_keeps_what_was_committed(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokentop.cli", "record", "--demo", "--db", str(db), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if db.exists() and _ticks(db) >= 5:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert _ticks(db) >= 5
    assert conn.execute("SELECT ended_at IS NOT NULL FROM sessions").fetchone() == (1,)


def _ticks(db: Path) -> int:
    try:
        return sqlite3.connect(db).execute("SELECT COUNT(*) FROM gpu_ticks").fetchone()[0] // 8
    except sqlite3.Error:
        return 0


def test_bad_flags_and_config_are_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["snapshot", "--endpoint", "localhost:8000"]) == 2
    assert "http://" in capsys.readouterr().err
    assert main(["snapshot", "--endpoint", "http://x,colour=red"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("interval_s = [")
    assert main(["snapshot", "--config", str(bad)]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert main(["snapshot", "--config", str(tmp_path / "missing.toml")]) == 2
    assert main(["snapshot", "--interval", "0"]) == 2


def test_one_slow_endpoint_does_not_delay_the_tick() -> None:
    with LoopbackServer() as fast, LoopbackServer() as slow:
        counting_vllm(fast)
        slow.route("/metrics", Reply(body=VLLM_PAGE.format(prompt=1, gen=1), delay_s=5))
        config = Config(
            interval_s=0.5,
            endpoints=(
                EndpointConfig(url=fast.url + "/metrics", name="fast"),
                EndpointConfig(url=slow.url + "/metrics", name="slow"),
            ),
        )
        sampler = Sampler(config, NvmlReader(lib=FakeNvml.healthy(count=2)))
        try:
            sampler.tick()
            started = time.monotonic()
            snap = sampler.tick()
            took = time.monotonic() - started
        finally:
            sampler.stop()
    status = {s.sample.name: s.sample for s in snap.endpoints}
    assert status["fast"].status == "up"
    assert status["slow"].status in ("stale", "error") and "timed out" in status["slow"].error
    # The deadline is 80 % of the 0.5 s interval; the slow server answers after 5 s. Far
    # below both, with room for a loaded machine: the tick did not wait for it.
    assert took < 2.5


def test_snapshot_reads_a_captured_llamacpp_page_as_llamacpp(fixture_page: Callable[[str], str]) -> None:
    page = fixture_page("llamacpp/metrics-idle-after-load-gemma3-270m-cpu.txt")
    with LoopbackServer() as server:
        server.route("/metrics", page)
        server.route("/slots", "[]")
        result = tokentop("snapshot", "--json", "--endpoint", server.url, "--interval", "0.2")
    (endpoint,) = json.loads(result.stdout)["endpoints"]
    assert endpoint["kind"] == "llamacpp"
    assert endpoint["generation_tokens_counter"] == 864 and endpoint["prompt_tokens_counter"] == 45


# --- settings that crashed or were misread, through the real command (issue 9, item 9) -----------


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[[endpoints]]\nurl = 5", "endpoints[0].url"),  # was AttributeError
        ('seed = "x"', "seed"),  # was TypeError
        ('[cost]\nenergy_in_rate = "false"', "cost.energy_in_rate"),  # was read as true
        ('history = "no"', "history"),  # kept the history on
        ('[[endpoints]]\nurl = "http://127.0.0.1:9"\ngpus = "12"', "endpoints[0].gpus"),  # became GPUs 1 and 2
        ('[[cost.api_prices]]\nname = "x"\nusd_per_mtok_in = -3\nusd_per_mtok_out = 1', "cost.api_prices[0]"),
        ('[[cost.api_prices]]\nname = "x"\nusd_per_mtok_in = 1\nusd_per_mtok_out = nan', "cost.api_prices[0]"),
        ('[[endpoints]]\nurl = "http://127.0.0.1:9"\nname = "\\u001b]0;pwned\\u0007"', "endpoints[0].name"),
    ],
)
def test_a_bad_setting_is_one_line_naming_its_key_and_exit_2(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml + "\n")
    result = tokentop("snapshot", "--json", "--config", str(config))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"tokentop: config file {config}: {key}")
    assert result.stderr.rstrip("\n").isprintable()  # nothing from the file acts on the terminal


def test_a_config_path_that_is_a_directory_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = tokentop("snapshot", "--json", "--config", str(tmp_path))  # was IsADirectoryError
    assert result.returncode == 2
    assert result.stderr == f"tokentop: cannot read config file {tmp_path}: Is a directory\n"


def test_credentials_in_an_endpoint_url_are_never_echoed() -> None:
    """The port check ran first and repeated the whole URL, password included (issue 9, 12)."""
    for url in ("http://u:hunter2@127.0.0.1:99999", "http://u:hunter2@127.0.0.1:8000", "http://u:hunter2@[::1"):
        result = tokentop("snapshot", "--endpoint", url)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "hunter2" not in result.stderr and "u:" not in result.stderr


# --- standard output that fails (issue 9, item 12) ------------------------------------------------


@pytest.fixture(scope="module")
def small_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokentop.demo import simulated_snapshots
    from tokentop.history import Store

    db = tmp_path_factory.mktemp("history") / "h.db"
    store = Store.open(db, host="h", version="0", config=Config().public_dict())
    for snapshot in simulated_snapshots(15, seed=2):
        store.append(snapshot)
    store.close()
    return db


def _run_into(stdout: int | IO[str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tokentop.cli", *args], stdout=stdout, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("command", ["summary", "snapshot"])
def test_output_to_a_full_disk_is_one_line_and_exit_1(small_history: Path, command: str) -> None:
    args = ("summary", "--db", str(small_history)) if command == "summary" else ("snapshot", "--json", "--demo")
    with open("/dev/full", "w") as full, _run_into(full, *args) as process:
        _, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert err == "tokentop: cannot write to standard output: No space left on device\n"


@pytest.mark.parametrize("command", ["summary", "snapshot"])
def test_a_closed_pipe_ends_quietly(small_history: Path, command: str) -> None:
    """``tokentop snapshot --json | head -3``: the reader went away; no traceback, no message."""
    args = ("summary", "--db", str(small_history)) if command == "summary" else ("snapshot", "--json", "--demo")
    with _run_into(subprocess.PIPE, *args) as process:
        assert process.stdout is not None
        process.stdout.close()  # before anything is written: the write meets a closed pipe
        err = process.stderr.read() if process.stderr else ""
        process.wait(timeout=60)
    assert err == "" and process.returncode == 141


# --- record says what changes, once (issue 9, item 12) ---------------------------------------------


def test_record_reports_an_endpoint_going_down_and_coming_back_once_each(tmp_path: Path) -> None:
    with LoopbackServer() as server:
        back_at = time.monotonic() + 2.0
        page = VLLM_PAGE.format(prompt=10, gen=20)
        server.route("/metrics", lambda seen: Reply(status=500) if time.monotonic() < back_at else Reply(body=page))
        result = tokentop(
            "record",
            "--endpoint",
            f"{server.url}/metrics,kind=vllm,name=big",
            "--db",
            str(tmp_path / "h.db"),
            "--duration",
            "4",
            "--interval",
            "0.3",
            "--no-summary",
        )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len([line for line in lines if line.startswith("tokentop: big is down: ")]) == 1, result.stderr
    assert lines.count("tokentop: big is back up") == 1, result.stderr


def test_record_says_the_history_is_waiting_once_not_every_tick(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with _run_into(
        subprocess.DEVNULL, "record", "--demo", "--db", str(db), "--interval", "0.2", "--no-summary"
    ) as process:
        deadline = time.monotonic() + 30
        while _ticks(db) < 3:
            assert time.monotonic() < deadline, "record wrote nothing"
            time.sleep(0.2)
        locker = sqlite3.connect(db, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # another program holds the file: ticks wait in memory
        time.sleep(2.5)
        locker.execute("COMMIT")
        locker.close()
        time.sleep(1.0)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    waiting = [line for line in err.splitlines() if "waiting in memory" in line]
    assert len(waiting) == 1, err


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["snapshot", "--json", "--ssh=-oProxyCommand=x"], "--ssh: not an ssh target: '-oProxyCommand=x'"),
        (
            ["snapshot", "--json", "--ssh", "gpu-1:99999"],
            "--ssh: port 99999 of 'gpu-1:99999' is not between 1 and 65535",
        ),
        (["summary", "--prometheus", "ftp://x"], "--prometheus: must start with http:// or https://: 'ftp://x'"),
        (["summary", "--prometheus", "http://me:pw@x"], "--prometheus: 'http://…@x' carries credentials"),
        (["--prometheus", "http://x:9090", "--ssh", "gpu-1"], "a fleet is read from Prometheus or over ssh, not both"),
    ],
)
def test_a_bad_fleet_option_is_one_line_naming_the_flag(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tokentop: {said}") and err.count("\n") == 1 and "pw" not in err


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('[[hosts]]\nssh = "-oProxyCommand=x"', "hosts[0].ssh"),
        ('[[hosts]]\nssh = ""', "hosts[0].ssh"),
        ('[prometheus]\nurl = "http://me:pw@x"', "prometheus.url"),
        ('[prometheus]\nurl = "http://x"\nrefresh_s = 0', "prometheus.refresh_s"),
        ('[prometheus]\nurl = "http://x"\n[[hosts]]\nssh = "gpu-1"', "prometheus.url (--prometheus) or hosts (--ssh)"),
    ],
)
@pytest.mark.parametrize("command", [[], ["snapshot", "--json"], ["summary"]])
def test_bad_fleet_settings_are_one_line_naming_the_key(
    toml: str, key: str, command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(toml + "\n")
    assert main([*command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tokentop: config file {path}: ") and key in err and err.count("\n") == 1
    assert "pw" not in err
