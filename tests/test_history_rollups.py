"""A tick's rollups are written together after its rows (issue 13): still only for the rows that
were actually inserted, when some of the tick's rows were written before and others are new."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from factories import build_snapshot, gpu_uuid

from tokentop.history import Store
from tokentop.model import Totals


def test_a_tick_partly_written_before_counts_only_its_new_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with Store.open(path, host="h", version="v", config={}) as store:
        store.append(build_snapshot(1000.0, [Totals(tokens_out=10.0), Totals(tokens_out=20.0)]))
        store.append(build_snapshot(1001.0, [Totals(tokens_out=15.0), Totals(tokens_out=29.0)], seq=2))
        # The same instant again: GPU 0's row is there already; GPU 2 is seen for the first time.
        store.append(
            build_snapshot(
                1001.0, [Totals(tokens_out=99.0), Totals(tokens_out=7.0)], seq=3, gpus=[{}, {"uuid": gpu_uuid(2)}]
            )
        )
    conn = sqlite3.connect(path)
    rollups = conn.execute(
        "SELECT g.uuid, r.samples, r.tokens_out_delta, r.tokens_out_cum, r.covered_s FROM gpu_rollup_1m r"
        " JOIN gpus g ON g.id = r.gpu_id ORDER BY g.uuid"
    ).fetchall()
    ticks = conn.execute("SELECT count(*) FROM gpu_ticks").fetchone()
    conn.close()

    assert ticks == (5,)
    assert rollups == [
        (gpu_uuid(0), 2, 5.0, 15.0, 1.0),  # its replayed row counted nothing
        (gpu_uuid(1), 2, 9.0, 29.0, 1.0),
        (gpu_uuid(2), 1, 0.0, 7.0, 0.0),  # a first row adds nothing yet
    ]
