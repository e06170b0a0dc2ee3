"""The figures before and after a change of shape: 130 simulated demo ticks (seed 5) written to
a real SQLite history, then the summary (JSON, CSV) and the last snapshot's JSON,
compared with the files in ``tests/fixtures/golden`` that the code wrote before the reshape of
issue 8. Keys may be renamed (``RENAMED``); values may not change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tokentop import report
from tokentop.config import Config
from tokentop.demo import simulated_snapshots
from tokentop.history import Store
from tokentop.snapshot_json import snapshot_dict

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
TICKS, SEED = 130, 5

# Per-run values: the temp file, the wall time the session was opened, the demo's process id.
VOLATILE_KEYS = {"db_path", "started_unix_s", "started_utc", "ended_unix_s", "ended_utc", "pid"}


def _scrub(value: object) -> object:
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    snapshots = simulated_snapshots(TICKS, seed=SEED)
    db = tmp_path_factory.mktemp("golden") / "history.db"
    config = Config()
    store = Store.open(db, host="golden", version="0", config=config.public_dict())
    for snap in snapshots:
        store.append(snap)
    store.close()
    result = report.summarize(db)
    return {
        "summary.json": json.dumps(_scrub(report.to_json_dict(result)), indent=1, sort_keys=True),
        "summary.csv": report.render_csv(result),
        "snapshot.json": json.dumps(_scrub(snapshot_dict(snapshots[-1], config.cost)), indent=1, sort_keys=True),
    }


@pytest.mark.parametrize("name", ["summary.json", "summary.csv", "snapshot.json"])
def test_same_figures_as_before_the_reshape(outputs: dict[str, str], name: str) -> None:
    expected = (GOLDEN / name).read_text()
    assert outputs[name] == expected
