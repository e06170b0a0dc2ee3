"""Issue 10 ("The screen a user trusts at a glance"), the summary's side: which session a
summary is of (demo and snapshot sessions kept apart, marked), peaks never below the mean, a host
without a GPU, one word per state, a summary that fits the terminal it is printed on, and
commands that refuse the options they would ignore. Real SQLite files and, where the failure was
at the command line, the real command in a process of its own."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
import tempfile
from pathlib import Path

import pytest
from factories import build_snapshot, gpu_uuid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import LoopbackServer
from test_cli import counting_vllm, tokentop

from tokentop import report
from tokentop.cli import main
from tokentop.cli.live import run_live
from tokentop.cli.parser import build_parser, config_from_args
from tokentop.cli.runtime import Runtime, open_store
from tokentop.config import Config
from tokentop.history import Store
from tokentop.model import Totals
from tokentop.nvml.fake import FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.report import Figures

T0 = 1_700_000_040.0


def no_gpu(tmp_path: Path) -> dict[str, str]:
    """The environment of a host without an NVIDIA driver, on any machine: NVML's library is
    not found (as ``FakeNvml.no_driver``), set up before tokentop starts."""
    folder = tmp_path / "no-driver"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import pynvml\n\n\n"
        "def _no_driver():\n"
        "    raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)\n\n\n"
        "pynvml.nvmlInit = _no_driver\n"
    )
    return {"PYTHONPATH": str(folder)}


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1 and stderr.startswith("tokentop: ") and "Traceback" not in stderr, stderr
    return stderr


# --- item 2: demo and snapshot sessions apart, marked ------------------------------------------


def test_demo_sessions_go_to_their_own_file_and_are_marked_simulated(tmp_path: Path) -> None:
    env = {"XDG_DATA_HOME": str(tmp_path)}
    result = tokentop("record", "--demo", "--duration", "2", "--interval", "0.5", "--no-summary", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tokentop" / "demo.db").exists()
    assert not (tmp_path / "tokentop" / "history.db").exists()  # the real history is untouched
    # `summary` reads the real history: there is none, and it says where the demo's sessions are.
    result = tokentop("summary", env=env)
    assert result.returncode == 2 and "`tokentop summary --demo`" in one_line(result.stderr)
    data = json.loads(tokentop("summary", "--demo", "--format", "json", env=env).stdout)
    assert (data["session"]["origin"], data["session"]["simulated"]) == ("record", True)
    text = tokentop("summary", "--demo", env=env).stdout
    assert text.splitlines()[0].endswith("(8× NVIDIA H200), simulated")
    assert "simulated host (--demo): not real readings" in text
    assert "| tokentop record (simulated) |" in tokentop("summary", "--demo", "--list", env=env).stdout
    [row] = csv.DictReader(io.StringIO(tokentop("summary", "--demo", "--list", "--format", "csv", env=env).stdout))
    assert (row["origin"], row["simulated"]) == ("record", "True")


def test_snapshot_records_no_session_unless_asked_and_summary_keeps_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "h.db"
    recorded = tokentop("record", "--demo", "--db", str(db), "--duration", "1.5", "--interval", "0.5", "--no-summary")
    assert recorded.returncode == 0, recorded.stderr
    env = {"XDG_DATA_HOME": str(tmp_path / "data")}
    assert tokentop("snapshot", "--json", "--demo", "--interval", "0.3", env=env).returncode == 0
    assert not (tmp_path / "data").exists()  # no history written anywhere
    result = tokentop("snapshot", "--json", "--demo", "--interval", "0.3", "--record", "--db", str(db))
    assert result.returncode == 0, result.stderr
    assert sqlite3.connect(db).execute("SELECT origin, simulated FROM sessions ORDER BY id").fetchall() == [
        ("record", 1),
        ("snapshot", 1),
    ]
    data = json.loads(tokentop("summary", "--db", str(db), "--format", "json").stdout)
    assert data["session"]["origin"] == "record"  # the latest recording, not the snapshot's 2 s
    assert main(["snapshot", "--json", "--db", str(db)]) == 2
    assert "--record" in one_line(capsys.readouterr().err)


def _session(path: Path, origin: str, t0: float) -> int:
    with Store.open(path, host="h", version="v", config={}, origin=origin) as store:
        for k in range(3):
            store.append(build_snapshot(t0 + k, [Totals(tokens_out=100.0 * k, energy_j=50.0 * k)]))
        assert store.session_id is not None
        return store.session_id


def test_summary_takes_the_latest_live_or_record_session_by_default(tmp_path: Path) -> None:
    only_export = tmp_path / "export.db"
    _session(only_export, "export", T0)
    assert report.summarize(only_export).session.origin == "export"  # nothing else to take
    path = tmp_path / "h.db"
    recorded = _session(path, "record", T0 + 100)
    _session(path, "export", T0 + 200)
    _session(path, "snapshot", T0 + 300)
    assert report.summarize(path).session.id == recorded
    live = _session(path, "live", T0 + 400)
    assert report.summarize(path).session.id == live
    assert report.summarize(path, since=T0 + 250, until=T0 + 350).session.origin == "snapshot"  # only it


# --- item 3: the peak is never below the mean ----------------------------------------------------


@st.composite
def sessions(draw: st.DrawFn) -> tuple[list[float], list[list[tuple[float, float]]], int]:
    """Tick times (irregular, a few seconds to a few minutes in all), each GPU's tokens out and
    joules per tick, and the tick at which the last GPU appears (0: with the others)."""
    n_ticks = draw(st.integers(2, 70))
    steps = draw(st.lists(st.floats(0.2, 3.0), min_size=n_ticks - 1, max_size=n_ticks - 1))
    times = [T0]
    for step in steps:
        times.append(times[-1] + step)
    n_gpus = draw(st.integers(1, 3))
    delivery = st.tuples(st.one_of(st.just(0.0), st.floats(0, 5000)), st.floats(0, 7000))
    per_gpu = [draw(st.lists(delivery, min_size=n_ticks, max_size=n_ticks)) for _ in range(n_gpus)]
    late = draw(st.integers(0, n_ticks - 2)) if n_gpus > 1 else 0
    return times, per_gpu, late


def _record(path: Path, times: list[float], per_gpu: list[list[tuple[float, float]]], late: int) -> None:
    cumulative = [[0.0, 0.0] for _ in per_gpu]
    with Store.open(path, host="h", version="v", config={}) as store:
        for k, t in enumerate(times):
            present = len(per_gpu) if k >= late else len(per_gpu) - 1
            totals = []
            for i in range(present):
                if k > 0:
                    cumulative[i][0] += per_gpu[i][k][0]
                    cumulative[i][1] += per_gpu[i][k][1]
                totals.append(
                    Totals(tokens_in=cumulative[i][0] * 3, tokens_out=cumulative[i][0], energy_j=cumulative[i][1])
                )
            assert store.append(build_snapshot(t, totals, seq=k + 1)) is None


def _ordered(f: Figures, windows: int | None) -> None:
    """p50 <= p95 <= peak and mean <= peak, for tok/s in and out and W; no percentiles from
    fewer than three windows."""
    for mean, p50, p95, peak in (
        (f.tok_s_in_mean, f.tok_s_in_p50, f.tok_s_in_p95, f.tok_s_in_peak),
        (f.tok_s_out_mean, f.tok_s_out_p50, f.tok_s_out_p95, f.tok_s_out_peak),
        (f.power_w_mean, None, None, f.power_w_peak),
    ):
        if peak is None:
            continue
        assert mean is not None and mean <= peak * (1 + 1e-9) + 1e-9, (mean, peak)
        if p50 is not None and p95 is not None:
            assert p50 <= p95 <= peak
    if windows is not None:
        assert (f.tok_s_out_p50 is None) == (windows < 3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions())
def test_over_any_session_the_peak_is_at_least_the_mean_and_the_percentiles_in_order(
    session: tuple[list[float], list[list[tuple[float, float]]], int],
) -> None:
    times, per_gpu, late = session
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.db"
        _record(path, times, per_gpu, late)
        summary = report.summarize(path)
    assert summary.host is not None
    _ordered(summary.host, summary.windows_count)
    for gpu in summary.gpus:
        _ordered(gpu.figures, None)
    if summary.until - summary.since < 5.0:  # shorter than half a window: no window at all
        assert summary.host.tok_s_out_peak is None and summary.windows_count == 0


def test_a_13_second_demo_record_has_no_peak_below_its_mean(tmp_path: Path) -> None:
    """As filed: `tokentop record --demo --seed 5 --duration 13; tokentop summary` gave host tok/s
    out mean 3,559 and peak 3,244 (W mean 1,709, peak 1,608): the 3 s after the only 10 s window
    were left out of the windows but not of the mean."""
    db = tmp_path / "h.db"
    result = tokentop("record", "--demo", "--seed", "5", "--duration", "13", "--db", str(db), "--no-summary")
    assert result.returncode == 0, result.stderr
    data = json.loads(tokentop("summary", "--db", str(db), "--format", "json").stdout)
    for figures in (data["host"], *data["gpus"]):
        assert figures["tok_s_out_mean"] <= figures["tok_s_out_peak"] * (1 + 1e-9)
        assert figures["tok_s_in_mean"] <= figures["tok_s_in_peak"] * (1 + 1e-9)
        assert figures["power_w_mean"] <= figures["power_w_peak"] * (1 + 1e-9)
        assert figures["tok_s_out_p50"] is None and figures["tok_s_out_p95"] is None
    assert data["rate_windows"]["count"] == 1
    assert "fewer than 3: no p50 or p95, only the peak" in " ".join(data["notes"])


# --- item 8: a host without a GPU reading ------------------------------------------------------


def test_a_host_without_a_gpu_summarises_what_its_endpoints_delivered(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with LoopbackServer() as server:
        counting_vllm(server)
        result = tokentop(
            "record",
            "--endpoint",
            server.url,
            "--db",
            str(db),
            "--duration",
            "2",
            "--interval",
            "0.5",
            env=no_gpu(tmp_path),
        )
    assert result.returncode == 0, result.stderr
    assert "no session summary" not in result.stderr
    out = result.stdout
    assert "no GPU was read" in out and "| vllm |" in out and "price" not in out
    assert "tokens    in " in out and "$/Mtok    not known: no GPU was read" in out
    data = json.loads(tokentop("summary", "--db", str(db), "--format", "json").stdout)
    assert data["host"] is None and data["gpus"] == []
    [endpoint] = data["endpoints"]
    assert endpoint["kind"] == "vllm" and endpoint["tokens_out"] > 0
    assert [note for note in data["notes"] if "no GPU was read" in note] == data["notes"]  # not "unmapped"
    text = tokentop("summary", "--db", str(db)).stdout
    assert "## Endpoints" in text and "price" not in text and "Cost inputs" not in text


def test_a_session_that_saw_no_gpu_and_no_endpoint_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "quiet.toml"
    config.write_text("discover = false\n")
    db = tmp_path / "h.db"
    result = tokentop(
        "record",
        "--config",
        str(config),
        "--db",
        str(db),
        "--duration",
        "1.5",
        "--interval",
        "0.5",
        env=no_gpu(tmp_path),
    )
    assert result.returncode == 0 and result.stdout == ""
    [line] = [line for line in result.stderr.splitlines() if "summary" in line or "price" in line]
    assert line == "tokentop: no session summary: session 1 has no readings: it saw no GPU and no endpoint"


def test_the_live_view_on_a_host_with_nothing_prints_one_line_not_two(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 10, item 8: on quit, "no session summary: session 1 has no readings" and then a
    summary complaining about the prices of GPUs that do not exist."""
    from tokentop.tui import TokentopApp

    config = Config(db_path=tmp_path / "h.db", discover=False, interval_s=0.2)
    runtime = Runtime(config, NvmlReader(FakeNvml.no_driver()))
    original_run = TokentopApp.run

    def headless_run(self: TokentopApp, **kwargs: object) -> None:
        self.call_later(lambda: self.set_interval(0.1, lambda: self.latest and self.latest.seq >= 3 and self.exit()))
        original_run(self, headless=True)

    monkeypatch.setattr(TokentopApp, "run", headless_run)
    assert run_live(runtime, open_store(config, required=True)) == 0
    out, err = capsys.readouterr()
    assert out == "" and "price" not in err
    assert err.endswith("tokentop: no session summary: session 1 has no readings: it saw no GPU and no endpoint\n")


# --- item 9: one word per state; two models never share a label --------------------------------


def test_the_markdown_names_models_apart_and_dashes_a_gpu_without_an_engine(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    names = [{"name": "NVIDIA H100 80GB HBM3"}, {"name": "NVIDIA H100 94GB HBM3"}]
    serving_gpu0 = [{"gpus": (gpu_uuid(0),)}]
    with Store.open(path, host="h", version="v", config=Config().public_dict()) as store:
        for k in range(25):
            totals = [Totals(tokens_out=90.0 * k, energy_j=400.0 * k, cost_usd=0.001 * k), Totals(energy_j=80.0 * k)]
            store.append(build_snapshot(T0 + k, totals, [(0.0, 90.0 * k)], gpus=names, endpoints=serving_gpu0))
    summary = report.summarize(path)
    text = report.render(summary, "md")
    assert "| 0 H100 80GB HBM3 | srv0 |" in text and "| 1 H100 94GB HBM3 | — |" in text
    energy_row = next(line for line in text.splitlines() if line.startswith("| 1 H100 94GB HBM3 | counter"))
    assert "| — | — |" in energy_row  # $/Mtok and busy $/Mtok: it serves no engine
    assert "| idle |" not in text
    short = report.render_short(summary, 80)
    assert "| 1 H100 94GB HBM3 | —       |" in short


# --- item 13: the summary printed at the end fits the terminal ---------------------------------


def test_the_summary_printed_when_record_ends_fits_the_terminal(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    args = ("record", "--demo", "--db", str(db), "--duration", "2", "--interval", "0.5")
    out = tokentop(*args, env={"COLUMNS": "80"}).stdout
    lines = out.splitlines()
    assert lines[0].startswith("# tokentop session 1 on ") and max(map(len, lines)) <= 80
    block = "\n".join(lines[:9])
    for words in ("duration", "tokens    in", "effective", "busy (per million", "cost", "kWh", "tok/J", "of GPU time"):
        assert words in block
    assert "| 7 H200 | —" in out  # the per-GPU table fits 80 columns
    assert " ".join(lines[-2:]) == f"Every table: tokentop summary --session 1 --db   {db}"  # the path wraps
    narrow = tokentop(*args, env={"COLUMNS": "50"}).stdout
    assert "| GPU" not in narrow and "--summary full prints every table" in " ".join(narrow.split())
    assert all(len(line) <= 50 for line in narrow.splitlines() if str(db) not in line)
    full = tokentop(*args, "--summary", "full", env={"COLUMNS": "80"}).stdout
    assert "## Tokens" in full and "## Energy and cost" in full
    assert tokentop(*args, "--summary", "none").stdout == ""


def test_the_short_summary_keeps_its_host_block_whatever_the_width(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    with Store.open(path, host="h", version="v", config=Config().public_dict()) as store:
        for k in range(31):
            totals = [Totals(tokens_out=100.0 * k, energy_j=300.0 * k, cost_usd=0.002 * k, busy_s=k)] * 16
            store.append(build_snapshot(T0 + k, totals, [(0.0, 1600.0 * k)]))
    summary = report.summarize(path)
    assert summary.host is not None and math.isclose(summary.host.usd_per_mtok or 0, 20.0)
    for width in (40, 80, 200):
        text = report.render_short(summary, width)
        assert "$/Mtok    $20.00 effective" in text
        assert ("| 15 H200 |" in text) == (width >= 80)  # 16 GPUs: the table only where it fits
        assert all(len(line) <= width for line in text.splitlines() if str(path) not in line)


# --- item 16: commands refuse what they would ignore --------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["summary", "--endpoint", "http://127.0.0.1:8000"],
        ["summary", "--interval", "2"],
        ["summary", "--seed", "3"],
        ["summary", "--no-history"],
        ["--endpoint", "http://127.0.0.1:8000", "summary"],
        ["--interval", "2", "summary"],
        ["--summary", "full", "summary"],
        ["--no-summary", "export", "--listen", "nowhere"],  # (a bad --listen: never left serving)
        ["export", "--prometheus", "http://127.0.0.1:9090"],
        ["--summary", "none", "snapshot"],
        ["snapshot", "--no-history", "--json"],  # a lone snapshot writes no history anyway
        ["snapshot", "--db", "x.db", "--json"],
        ["--once", "--db", "x.db"],
        ["--once", "--no-history"],
    ],
)
def test_a_command_refuses_an_option_it_would_ignore_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    command = next(a for a in argv if a in ("summary", "snapshot", "export", "--once"))
    flag = next(a for a in argv if a.startswith("--") and a != command)
    flag = "--summary/--no-summary" if "summary" in flag else flag
    said = one_line(capsys.readouterr().err)
    assert re.fullmatch(f"tokentop: {command} does not take {flag}( without [-a-z ]+)?: it would be ignored\n", said)


def test_snapshot_refuses_no_history_with_record_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", "--json", "--record", "--no-history"]) == 2
    said = one_line(capsys.readouterr().err)
    assert said == "tokentop: snapshot does not take --no-history without --follow: leave out --no-history\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--prometheus", "http://127.0.0.1:1", "--demo"], "the fleet view (--prometheus) does not take --demo"),
        (["--ssh", "gpu-1", "--no-summary"], "the fleet view (--ssh) does not take --summary/--no-summary"),
        (
            ["--prometheus", "http://127.0.0.1:1", "--interval", "2"],
            "the fleet view (--prometheus) does not take --interval",
        ),
        (["snapshot", "--json", "--ssh", "gpu-1", "--db", "x.db"], "snapshot of a fleet (--ssh) does not take --db"),
        (["snapshot", "--ssh", "gpu-1", "--no-history"], "snapshot of a fleet (--ssh) does not take --no-history"),
        (
            ["snapshot", "--ssh", "gpu-1", "--endpoint", "http://h:1"],
            "snapshot of a fleet (--ssh) does not take --endpoint",
        ),
        (
            ["summary", "--prometheus", "http://127.0.0.1:1", "--demo"],
            "summary of a fleet (--prometheus) does not take --demo",
        ),
        (["--seed", "3"], "the fleet view (the settings' [[hosts]]) does not take --seed"),
    ],
)
def test_a_fleet_refuses_the_options_of_this_host_in_one_line(
    argv: list[str], said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = tmp_path / "fleet.toml"
    settings.write_text('[[hosts]]\nssh = "gpu-9"\n')
    if not any(a in argv for a in ("--ssh", "--prometheus")):
        argv = ["--config", str(settings), *argv]
    assert main(argv) == 2
    assert one_line(capsys.readouterr().err) == f"tokentop: {said}: it would be ignored\n"


def test_over_ssh_the_interval_is_each_hosts_and_taken() -> None:
    args = build_parser().parse_args(["snapshot", "--json", "--ssh", "gpu-1", "--interval", "0.5"])
    config = config_from_args(args)
    assert (config.fleet_source, config.interval_s) == ("ssh", 0.5)


def test_summary_takes_demo_db_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert main(["summary", "--demo"]) == 2  # taken: it looks for the demo's history
    assert f"no history at {tmp_path / 'tokentop' / 'demo.db'}" in one_line(capsys.readouterr().err)
    config = tmp_path / "c.toml"
    config.write_text(f'db_path = "{tmp_path / "elsewhere.db"}"\n')
    assert main(["summary", "--config", str(config)]) == 2
    assert "elsewhere.db" in one_line(capsys.readouterr().err)
    help_text = tokentop("summary", "--help").stdout
    assert "--demo" in help_text and "--endpoint" not in help_text and "--interval" not in help_text
