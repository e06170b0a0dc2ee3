"""``Store.gpu_energy_methods_over``: one read over many spans counts what one read per span
would, summed (the summary's energy method reads all of a GPU's spans at once)."""

from __future__ import annotations

import random
from pathlib import Path

from factories import build_snapshot, gpu_uuid

from tokentop.history import Store
from tokentop.model import Totals
from tokentop.report.tracks import energy_method

T0 = 1_700_000_000.0
METHODS = ("counter", "power_integral", None)


def _write(path: Path, ticks: int) -> list[float]:
    """Two GPUs whose energy method changes at random, tick by tick; the ticks' times."""
    rng = random.Random(7)
    times = []
    with Store.open(path, host="test", version="test", config={}) as store:
        for i in range(ticks):
            t = T0 + i + rng.uniform(0.0, 0.3)
            gpus = [{"energy_method": rng.choice(METHODS)} for _ in range(2)]
            store.append(build_snapshot(t, [Totals(energy_j=float(i))] * 2, seq=i + 1, gpus=gpus))
            times.append(t)
    return times


def _summed(counts: list[dict[str | None, int]]) -> dict[str | None, int]:
    total: dict[str | None, int] = {}
    for one in counts:
        for method, n in one.items():
            total[method] = total.get(method, 0) + n
    return total


def test_many_spans_count_as_one_read_each(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    times = _write(path, 1000)
    rng = random.Random(3)
    cuts = sorted(rng.sample(range(len(times)), 2 * 450))  # 450 spans: more than one statement
    spans = [(times[a], times[b]) for a, b in zip(cuts[::2], cuts[1::2])]
    with Store.open_readonly(path) as store:
        session = store.latest_session_id()
        assert session is not None
        for uuid in (gpu_uuid(0), gpu_uuid(1)):
            one_by_one = _summed([store.gpu_energy_methods(session, uuid, a, b) for a, b in spans])
            assert store.gpu_energy_methods_over(session, uuid, spans) == one_by_one
            assert set(one_by_one) == set(METHODS)
        assert store.gpu_energy_methods_over(session, gpu_uuid(0), []) == {}
        assert store.gpu_energy_methods_over(session, "GPU-unknown", spans) == {}


def test_the_spans_ends_are_exact(tmp_path: Path) -> None:
    """``(after, until]``: a tick at ``after`` is not counted, one at ``until`` is."""
    path = tmp_path / "history.db"
    times = _write(path, 20)
    with Store.open_readonly(path) as store:
        session = store.latest_session_id()
        assert session is not None
        spans = [(times[2], times[5]), (times[9], times[10]), (times[12], times[12])]
        counts = store.gpu_energy_methods_over(session, gpu_uuid(0), spans)
        assert sum(counts.values()) == 3 + 1 + 0


def _one_gpu_session(path: Path, methods: tuple[str | None, ...]) -> None:
    """300 ticks of one GPU, measured by ``methods`` in turn."""
    with Store.open(path, host="test", version="test", config={}) as store:
        for i in range(300):
            gpus = [{"energy_method": methods[i % len(methods)]}]
            store.append(build_snapshot(T0 + i, [Totals(energy_j=float(i))], seq=i + 1, gpus=gpus))


def test_the_session_totals_stand_in_only_for_a_session_all_by_counter(tmp_path: Path) -> None:
    """``energy_method`` answers from the session's totals, reading nothing, only when they
    count every tick by the counter; either way its answer is the one the per-tick rows give."""
    for methods, expected in ((("counter",), "counter"), (METHODS, "mixed")):
        path = tmp_path / f"{len(methods)}.db"
        _one_gpu_session(path, methods)
        store = Store.open_readonly(path)
        session = store.latest_session_id()
        assert session is not None
        [totals] = store.gpu_session_totals(session)
        bounds = store.session_bounds(session)
        assert bounds is not None
        cases = []
        for since, until in (bounds, (T0 + 100, T0 + 200)):
            [track] = store.gpu_tracks(session, since, until, 10)
            from_rows = energy_method(store, session, track)
            assert from_rows.method == expected
            cases.append((track, from_rows))
        if expected == "mixed":
            assert all(energy_method(store, session, t, totals) == m for t, m in cases)
        store.close()
        if expected == "counter":  # a closed store: any read would raise
            assert all(energy_method(store, session, t, totals) == m for t, m in cases)
