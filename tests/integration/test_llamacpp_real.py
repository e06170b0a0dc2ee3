"""tokentop's numbers against a real llama.cpp server generating real tokens.

The oracles are the server's own answers: each streamed completion's final ``tokens_predicted``
and ``timings``, the arrival time of every streamed token, and ``/metrics`` read directly.
tokentop is never told the kind of server; it finds it, its process and its figures itself.

Facts about llama.cpp these tests rely on, checked on the real server:

- ``llamacpp:tokens_predicted_total`` grows only when a request finishes, by its
  ``tokens_predicted``; ``/slots`` shows the progress of running ones (``n_decoded``).
- ``llamacpp:prompt_tokens_total`` counts prompt tokens actually evaluated, without the ones
  reused from the slot's prompt cache: it moves by each response's ``timings.prompt_n``. The
  response's ``tokens_evaluated`` is ``prompt_n + cache_n`` and over-counts when the cache hits
  (``test_prompt_tokens_match_the_server_exactly`` checks both).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from llama_harness import Completion, LlamaServer, LoadRequest, run_load, start_load, words

import tokentop
from tokentop.config import Config, EndpointConfig
from tokentop.history import Store
from tokentop.model import EndpointFigures, Snapshot
from tokentop.nvml.fake import MIB, FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.sampler import Sampler

INTERVAL_S = 0.5
RATE_WINDOW_S = 5.0  # long enough that a few tokens' timing at its edges is ~1 % of it
COST_WINDOW_S = 300.0  # longer than any run here: the cost window then spans the whole run
TICK_WAIT_S = 60.0  # bound on every wait for ticks; a healthy run needs a second or two
AWAY_FROM_FINISH_S = 0.3  # rate window edges this far from any request's end (see the live-rate test)

# Varied prompts (4 to ~250 tokens) and lengths. Six requests for four slots: two wait in the
# server's queue. The long one outlives all others by several seconds on any machine, since
# they all start together and it has six times the tokens of the next longest: room for a whole
# rate window with no request ending near its edges.
LOAD = (
    LoadRequest("Write a long story about a lighthouse keeper and a storm.", 600),
    LoadRequest("Summarise these words: " + words(250, seed=1), 100),
    LoadRequest("List ten colours.", 70),
    LoadRequest("Describe this: " + words(60, seed=2), 50),
    LoadRequest("Why is the sky blue?", 40),
    LoadRequest("Count to twenty.", 30),
)


# --- tokentop watching the server ------------------------------------------------------------


@dataclass
class Watch:
    """tokentop's Sampler ticking on its own thread against the real server; every snapshot kept."""

    sampler: Sampler
    nvml: FakeNvml
    db_path: Path
    snapshots: list[Snapshot]

    def wait_for(
        self, what: str, predicate: Callable[[Snapshot], bool], *, count: int = 2, after: float = float("-inf")
    ) -> list[Snapshot]:
        """Wait until ``count`` snapshots taken after ``after`` satisfy ``predicate``."""
        deadline = time.monotonic() + TICK_WAIT_S
        while time.monotonic() < deadline:
            found = [s for s in list(self.snapshots) if s.t_mono > after and predicate(s)]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        last = self.snapshots[-1].endpoints[0].sample if self.snapshots and self.snapshots[-1].endpoints else None
        pytest.fail(f"no {count} ticks with {what} within {TICK_WAIT_S:g} s; last sample: {last}")

    def server_on_gpu(self, pid: int) -> None:
        """The fake GPU lists the real server's PID as a compute process (as NVML would)."""
        self.nvml.gpus[0].compute_processes = [(pid, 600 * MIB)]


@contextmanager
def watching(server: LlamaServer, folder: Path) -> Iterator[Watch]:
    endpoint = EndpointConfig(url=server.url)  # no kind: tokentop must find out
    db_path = folder / "history.db"
    config = Config(
        interval_s=INTERVAL_S,
        endpoints=(endpoint,),
        rate_window_s=RATE_WINDOW_S,
        cost_window_s=COST_WINDOW_S,
        process_interval_s=INTERVAL_S,
        http_timeout_s=2.0,
        db_path=db_path,
    )
    nvml = FakeNvml.healthy(count=1)  # no GPU here: NVML is faked underneath the real reader
    store = Store.open(db_path, host="integration-test", version=tokentop.__version__, config=config.public_dict())
    snapshots: list[Snapshot] = []
    sampler = Sampler(config, NvmlReader(lib=nvml), store=store, sink=snapshots.append)
    watch = Watch(sampler, nvml, db_path, snapshots)
    watch.server_on_gpu(server.pid)
    sampler.start()
    try:
        yield watch
    finally:
        sampler.stop()


def figures(snapshot: Snapshot) -> EndpointFigures:
    assert len(snapshot.endpoints) == 1, snapshot.endpoints
    return snapshot.endpoints[0]


def is_up(snapshot: Snapshot) -> bool:
    return bool(snapshot.endpoints) and figures(snapshot).sample.status == "up"


def check_completions(completions: Sequence[Completion]) -> None:
    failed = [f"{c.request.n_predict}: {c.error}" for c in completions if c.error]
    assert not failed, f"completions failed: {failed}"


def generated_by(completions: Sequence[Completion], t: float) -> int:
    """Tokens of all requests that had reached the client by ``t`` (the stream's own clock)."""
    return sum(c.generated_by(t) for c in completions)


def tick_before(snapshots: Sequence[Snapshot], t: float) -> Snapshot:
    return [s for s in snapshots if s.t_mono <= t][-1]


def tick_after(snapshots: Sequence[Snapshot], t: float) -> Snapshot:
    return next(s for s in snapshots if s.t_mono >= t)


def endpoint_rows(db_path: Path) -> list[sqlite3.Row]:
    """The endpoint's rows as stored (``endpoint_ticks_v``), read with plain sqlite3, read-only."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM endpoint_ticks_v ORDER BY session_id, t").fetchall()
    finally:
        conn.close()


def trace(snapshots: Sequence[Snapshot], since: float = float("-inf")) -> str:
    """Tick by tick, what tokentop read and made of it: shown when an exact check fails."""
    lines = ["t       status  prompt_raw+in_flight  gen_raw+in_flight  tokens_in  tokens_out"]
    for snap in snapshots:
        if snap.t_mono < since or not snap.endpoints:
            continue
        fig = figures(snap)
        s = fig.sample
        lines.append(
            f"{snap.t_mono - since if since > float('-inf') else snap.t_mono:7.2f} {s.status:6} "
            f"{s.prompt_tokens_total}+{s.prompt_tokens_in_flight}  "
            f"{s.generation_tokens_total}+{s.generation_tokens_in_flight}  "
            f"{fig.tokens_in_total:g}  {fig.tokens_out_total:g}  {s.error or ''}"
        )
    return "\n".join(lines)


def assert_never_decreasing(snapshots: Sequence[Snapshot]) -> None:
    """Delivered totals only grow and no rate is negative, whatever the server did."""
    previous: Snapshot | None = None
    for snap in snapshots:
        fig = figures(snap)
        for rate in (fig.tok_s_in, fig.tok_s_out, snap.host.rate_window.tok_s_out, snap.host.cost_window.tok_s_out):
            assert rate is None or rate >= 0, f"negative rate at tick {snap.seq}: {rate}"
        if previous is not None:
            before = figures(previous)
            assert fig.tokens_out_total >= before.tokens_out_total, f"tokens out fell at tick {snap.seq}"
            assert fig.tokens_in_total >= before.tokens_in_total, f"tokens in fell at tick {snap.seq}"
            assert snap.host.totals.tokens_out >= previous.host.totals.tokens_out
        previous = snap


# --- one observed load, shared by the tests below ---------------------------------------------


@dataclass
class ObservedLoad:
    server_pid: int
    gpu_uuid: str
    completions: list[Completion]
    snapshots: list[Snapshot]
    db_path: Path
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    load_sent_at: float
    load_done_at: float

    @property
    def tokens_predicted(self) -> int:
        return sum(c.tokens_predicted or 0 for c in self.completions)

    @property
    def prompt_n(self) -> int:
        return sum(int(c.timings["prompt_n"]) for c in self.completions)

    @property
    def long_request(self) -> Completion:
        return max(self.completions, key=lambda c: c.request.n_predict)


@pytest.fixture(scope="module")
def observed(llama_server: LlamaServer, tmp_path_factory: pytest.TempPathFactory) -> ObservedLoad:
    """Watch the server idle, then under ``LOAD``, then idle again until the counters settle."""
    with watching(llama_server, tmp_path_factory.mktemp("observed")) as watch:
        # The process mapping comes from the sampler's background thread, a tick or two in.
        watch.wait_for("the server and its process found", lambda s: is_up(s) and figures(s).pid is not None)
        metrics_before = llama_server.metrics()  # idle: these are the final counters before
        sent_at = time.monotonic()
        completions = run_load(llama_server.url, LOAD)
        check_completions(completions)
        done_at = max(c.finished_at for c in completions if c.finished_at is not None)
        watch.wait_for("the server up after the load", is_up, after=done_at)
        metrics_after = llama_server.metrics()
    return ObservedLoad(
        llama_server.pid,
        watch.nvml.gpus[0].uuid,
        completions,
        list(watch.snapshots),
        watch.db_path,
        metrics_before,
        metrics_after,
        sent_at,
        done_at,
    )


def test_kind_detected_and_server_process_found(observed: ObservedLoad) -> None:
    up = [s for s in observed.snapshots if is_up(s) and s.t_mono >= observed.load_sent_at]
    assert up, "tokentop never read the server under load"
    for snap in up:
        fig = figures(snap)
        assert fig.sample.kind == "llamacpp"
        assert fig.pid == observed.server_pid  # listening port -> PID, found through psutil
        assert fig.mapping == "process" and fig.gpus == (observed.gpu_uuid,)
        assert fig.sample.generation_tokens_in_flight is not None, "/slots was not read"
    assert max(figures(s).sample.running or 0 for s in up) == 4  # all four slots were busy


def test_generation_tokens_match_the_responses_exactly(observed: ObservedLoad) -> None:
    expected = observed.tokens_predicted
    assert expected == sum(r.n_predict for r in LOAD)  # ignore_eos: every request ran to its length
    assert (
        observed.metrics_after["tokens_predicted_total"] - observed.metrics_before["tokens_predicted_total"] == expected
    )  # the oracle agrees with itself
    last = observed.snapshots[-1]
    print(
        f"\ngeneration tokens: responses {expected}, tokentop {figures(last).tokens_out_total:g}, "
        f"history {endpoint_rows(observed.db_path)[-1]['tokens_out_cum']:g}"
    )
    assert figures(last).tokens_out_total == expected, trace(observed.snapshots, observed.load_sent_at)
    assert last.host.totals.tokens_out == expected
    assert [g.totals.tokens_out for g in last.gpus] == [expected]  # all on the server's one GPU


def test_prompt_tokens_match_the_server_exactly(observed: ObservedLoad) -> None:
    counter_moved = observed.metrics_after["prompt_tokens_total"] - observed.metrics_before["prompt_tokens_total"]
    assert counter_moved == observed.prompt_n  # prompt_tokens_total moves by timings.prompt_n ...
    assert sum(c.tokens_evaluated for c in observed.completions) == observed.prompt_n + sum(
        int(c.timings["cache_n"]) for c in observed.completions
    )  # ... not by tokens_evaluated
    last = observed.snapshots[-1]
    print(
        f"\nprompt tokens: responses prompt_n {observed.prompt_n} (tokens_evaluated "
        f"{sum(c.tokens_evaluated for c in observed.completions)}), counter moved {counter_moved:g}, "
        f"tokentop {figures(last).tokens_in_total:g}, history {endpoint_rows(observed.db_path)[-1]['tokens_in_cum']:g}"
    )
    assert figures(last).tokens_in_total == observed.prompt_n, (
        f"{[(c.timings['prompt_n'], c.timings['cache_n']) for c in observed.completions]}\n"
        + trace(observed.snapshots, observed.load_sent_at)
    )
    assert last.host.totals.tokens_in == observed.prompt_n


def test_history_rows_hold_the_same_totals(observed: ObservedLoad) -> None:
    rows = endpoint_rows(observed.db_path)
    assert len(rows) == len(observed.snapshots)
    up = [r for r in rows if r["status"] == "up"]
    assert up and all(r["kind"] == "llamacpp" for r in up)
    assert rows[-1]["tokens_out_cum"] == observed.tokens_predicted
    assert rows[-1]["tokens_in_cum"] == observed.prompt_n
    assert rows[-1]["generation_tokens_raw"] == observed.metrics_after["tokens_predicted_total"]
    assert rows[-1]["prompt_tokens_raw"] == observed.metrics_after["prompt_tokens_total"]
    cumulative = [(r["tokens_in_cum"], r["tokens_out_cum"]) for r in rows]
    assert cumulative == sorted(cumulative), "stored totals went down"


def test_live_rate_during_the_long_request_and_no_double_count_at_its_end(observed: ObservedLoad) -> None:
    long = observed.long_request
    others_done = max(c.finished_at for c in observed.completions if c is not long)
    # Ticks while the long request ran alone (by the client's clock): llama.cpp's counter stands
    # still, so any tokens tokentop adds between two of them came from /slots.
    alone = [s for s in observed.snapshots if others_done < s.t_mono < long.finished_at]
    live = [
        (a, b)
        for a, b in itertools.pairwise(alone)
        if figures(a).sample.generation_tokens_total == figures(b).sample.generation_tokens_total
        and figures(b).tokens_out_total > figures(a).tokens_out_total
    ]
    assert live, "no tokens counted while the long request ran alone\n" + trace(
        observed.snapshots, observed.load_sent_at
    )
    for _, snap in live:
        assert figures(snap).sample.generation_tokens_in_flight > 0
        assert figures(snap).tok_s_out > 0

    # At its end the counter takes in all of its tokens at once; tokentop must add only the few
    # generated since the last tick, not the whole request again.
    before, after = tick_before(observed.snapshots, long.finished_at), tick_after(observed.snapshots, long.finished_at)
    added = figures(after).tokens_out_total - figures(before).tokens_out_total
    streamed = generated_by(observed.completions, after.t_mono) - generated_by(observed.completions, before.t_mono)
    assert added <= streamed + 10, f"{added} tokens added at the end of a request, {streamed} generated\n" + trace(
        observed.snapshots, observed.load_sent_at
    )
    assert_never_decreasing(observed.snapshots)


def test_mean_rate_over_the_load_window_within_5_percent(observed: ObservedLoad) -> None:
    """The load window is bounded by tokentop's own ticks: the last tick before the first
    request was sent and the first tick after the last response arrived. All of the load's
    tokens were generated inside it, so the responses imply sum(tokens_predicted) / span for
    the same span; tokentop's mean is its delivered-token total's growth over that span."""
    snaps = observed.snapshots
    start, end = tick_before(snaps, observed.load_sent_at), tick_after(snaps, observed.load_done_at)
    span = end.t_mono - start.t_mono
    tokentop_rate = (figures(end).tokens_out_total - figures(start).tokens_out_total) / span
    responses_rate = observed.tokens_predicted / span
    # What the server's timings say it sustained while generating, for the report only:
    # from the earliest start (end minus prompt and generation time) to the last end.
    began = min(
        c.finished_at - (c.timings["prompt_ms"] + c.timings["predicted_ms"]) / 1000 for c in observed.completions
    )
    print(
        f"\nload window {span:.2f} s: tokentop {tokentop_rate:.2f} tok/s, responses "
        f"{responses_rate:.2f} tok/s; server busy {observed.load_done_at - began:.2f} s at "
        f"{observed.tokens_predicted / (observed.load_done_at - began):.2f} tok/s"
    )
    assert tokentop_rate == pytest.approx(responses_rate, rel=0.05)


def test_live_rate_inside_the_load_within_5_percent(observed: ObservedLoad) -> None:
    """tokentop's own live figure (``tok/s`` over its rate window) at a tick in the middle of
    the load, against the tokens that streamed to the client inside the same window.

    The window is the one tokentop reports: it ends at the tick and spans ``span_s`` back to
    an earlier tick. Both its edges are kept ``AWAY_FROM_FINISH_S`` from any request's end,
    where llama.cpp's counter and ``/slots`` (read one after the other) can disagree for one
    tick. Streamed arrival times are the reference: every token reaches the client a few
    milliseconds after the server counts it, at both edges alike."""
    snaps = observed.snapshots
    finishes = [c.finished_at for c in observed.completions]
    first_token = min(c.progress[0][0] for c in observed.completions)

    def clear_of_finishes(t: float) -> bool:
        return all(abs(t - f) > AWAY_FROM_FINISH_S for f in finishes)

    candidates = []
    for snap in snaps:
        window = snap.host.rate_window
        start = snap.t_mono - window.span_s
        if (
            start >= first_token
            and snap.t_mono <= observed.load_done_at
            and window.span_s >= RATE_WINDOW_S
            and clear_of_finishes(start)
            and clear_of_finishes(snap.t_mono)
        ):
            streamed = generated_by(observed.completions, snap.t_mono) - generated_by(observed.completions, start)
            candidates.append((streamed, snap, window))
    assert candidates, "no tick had its whole rate window inside the load"
    streamed, snap, window = max(candidates, key=lambda c: c[0])
    reference = streamed / window.span_s
    assert figures(snap).tok_s_out == pytest.approx(window.tok_s_out)  # one endpoint: host = server
    print(
        f"\nlive rate over {window.span_s:.2f} s ending {snap.t_mono - observed.load_sent_at:.2f} s "
        f"into the load: tokentop {window.tok_s_out:.2f} tok/s, streamed {reference:.2f} tok/s "
        f"({streamed} tokens)"
    )
    assert window.tok_s_out == pytest.approx(reference, rel=0.05)


# --- a restart between two loads ----------------------------------------------------------------


PHASE_ONE = (
    LoadRequest("Tell me about rivers.", 80),
    LoadRequest("Name some birds: " + words(40, seed=3), 60),
    LoadRequest("What is rain?", 40),
)
PHASE_TWO = (
    LoadRequest("Tell me about mountains.", 70),
    LoadRequest("Name some trees: " + words(30, seed=4), 50),
    LoadRequest("What is snow?", 30),
)


def test_restart_between_loads_neither_loses_nor_doubles(llama_server: LlamaServer, tmp_path: Path) -> None:
    with watching(llama_server, tmp_path) as watch:
        watch.wait_for("the server up", is_up)
        first = run_load(llama_server.url, PHASE_ONE)
        check_completions(first)
        watch.wait_for("phase one counted", is_up, after=max(c.finished_at for c in first))
        old_pid = llama_server.pid

        restarted_at = time.monotonic()
        llama_server.restart()  # same port; the counters start again from zero
        watch.server_on_gpu(llama_server.pid)
        new_pid = llama_server.pid
        watch.wait_for("the new server's process", lambda s: is_up(s) and figures(s).pid == new_pid, after=restarted_at)
        second = run_load(llama_server.url, PHASE_TWO)
        check_completions(second)
        watch.wait_for("phase two counted", is_up, after=max(c.finished_at for c in second))
    snaps = list(watch.snapshots)

    assert new_pid != old_pid
    during = [s for s in snaps if s.t_mono > restarted_at]
    assert any(not is_up(s) for s in during), "the outage was never seen\n" + trace(snaps)
    # the counter as each up reading gave it; a reading may not know it (None), never a reason to fail here
    known = (figures(s).sample.generation_tokens_total for s in snaps if is_up(s))
    raw = [value for value in known if value is not None]
    assert any(b < a for a, b in itertools.pairwise(raw)), "the counter reset was never seen\n" + trace(snaps)
    assert_never_decreasing(snaps)

    expected_out = sum(c.tokens_predicted for c in (*first, *second))
    expected_in = sum(int(c.timings["prompt_n"]) for c in (*first, *second))
    assert expected_out == sum(r.n_predict for r in (*PHASE_ONE, *PHASE_TWO))
    last = snaps[-1]
    assert (figures(last).tokens_out_total, figures(last).tokens_in_total) == (expected_out, expected_in), trace(snaps)
    assert last.host.totals.tokens_out == expected_out
    assert [g.totals.tokens_out for g in last.gpus] == [expected_out]
    assert figures(last).pid == new_pid and figures(last).mapping == "process"

    rows = endpoint_rows(watch.db_path)
    assert (rows[-1]["tokens_out_cum"], rows[-1]["tokens_in_cum"]) == (expected_out, expected_in)
    cumulative = [(r["tokens_in_cum"], r["tokens_out_cum"]) for r in rows]
    assert cumulative == sorted(cumulative), "stored totals went down"


# --- the command line against the real server ------------------------------------------------------


def tokentop_command() -> list[str]:
    script = Path(sys.executable).with_name("tokentop")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tokentop.cli"]


def command_env(folder: Path) -> dict[str, str]:
    return {**os.environ, "XDG_DATA_HOME": str(folder / "data")}  # never the user's own history


def test_cli_snapshot_reports_kind_and_counters(llama_server: LlamaServer, tmp_path: Path) -> None:
    thread, running = start_load(llama_server.url, [LoadRequest("Write a poem about the moon.", 300)])
    try:
        llama_server.wait_until_generating()
        before = llama_server.metrics()
        done = subprocess.run(
            [*tokentop_command(), "snapshot", "--json", "--endpoint", llama_server.url, "--interval", "0.5"],
            capture_output=True,
            text=True,
            timeout=120,
            env=command_env(tmp_path),
        )
    finally:
        thread.join(300)
    check_completions(running)
    after = llama_server.metrics()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    [endpoint] = report["endpoints"]
    assert (endpoint["kind"], endpoint["status"], endpoint["pid"]) == ("llamacpp", "up", llama_server.pid)
    for key, name in (
        ("generation_tokens_counter", "tokens_predicted_total"),
        ("prompt_tokens_counter", "prompt_tokens_total"),
    ):
        assert before[name] <= endpoint[key] <= after[name], (key, before[name], endpoint[key], after[name])
    assert endpoint["generation_tokens_in_flight"] is not None
    # tokens generated during its three ticks, seen live (or at the request's end, should it
    # end first): never more than the request made, never nothing.
    assert 0 < endpoint["session_tokens_out"] <= 300


def wait_for_rows(db_path: Path, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + TICK_WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"tokentop record ended early: {process.communicate()[1]}"
        try:
            if sum(r["status"] == "up" for r in endpoint_rows(db_path)) >= count:
                return
        except sqlite3.Error:
            pass  # not created yet
        time.sleep(0.1)
    pytest.fail(f"tokentop record wrote no {count} rows of a server that is up within {TICK_WAIT_S:g} s")


RECORD_LOAD = (
    LoadRequest("Tell me about the sea.", 60),
    LoadRequest("Describe a forest: " + words(80, seed=5), 40),
    LoadRequest("What is wind?", 30),
)


def record_duration_s(server: LlamaServer) -> float:
    """Long enough for tokentop to start and for ``RECORD_LOAD`` to run on this machine now.

    One short request measures the single-stream speed; the load, run concurrently, is faster
    than that, so twice its tokens at that speed is a generous bound.
    """
    probe = run_load(server.url, [LoadRequest("Hello.", 16)])[0]
    check_completions([probe])
    tok_s = probe.tokens_predicted / (probe.finished_at - probe.sent_at)
    return min(180.0, max(15.0, 8.0 + 2.0 * sum(r.n_predict for r in RECORD_LOAD) / tok_s))


def test_cli_record_stores_kind_and_counters(llama_server: LlamaServer, tmp_path: Path) -> None:
    db_path = tmp_path / "record.db"
    duration = record_duration_s(llama_server)
    process = subprocess.Popen(
        [
            *tokentop_command(),
            "record",
            "--endpoint",
            llama_server.url,
            "--db",
            str(db_path),
            "--duration",
            f"{duration:.1f}",
            "--interval",
            str(INTERVAL_S),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(tmp_path),
    )
    try:
        wait_for_rows(db_path, 2, process)
        completions = run_load(llama_server.url, RECORD_LOAD)
        check_completions(completions)
        assert process.poll() is None, f"the load outlasted the recording ({duration:.0f} s)"
        _, stderr = process.communicate(timeout=duration + 30)  # it ends by itself
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # reaps it and closes its pipes (a no-op when done above)
    assert process.returncode == 0, stderr
    metrics = llama_server.metrics()
    rows = endpoint_rows(db_path)
    assert all(r["kind"] == "llamacpp" for r in rows)
    last = rows[-1]
    assert last["status"] == "up"
    assert last["tokens_out_cum"] == sum(c.tokens_predicted for c in completions)
    assert last["tokens_in_cum"] == sum(int(c.timings["prompt_n"]) for c in completions)
    assert (last["generation_tokens_raw"], last["prompt_tokens_raw"]) == (
        metrics["tokens_predicted_total"],
        metrics["prompt_tokens_total"],
    )
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL").fetchone() == (1,)
    finally:
        conn.close()
