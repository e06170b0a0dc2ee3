"""The figures before and after a change of shape: 130 simulated demo ticks (seed 5) written to
a real SQLite history, then the summary (JSON, CSV) and the last snapshot's JSON,
compared with the files in ``tests/fixtures/golden`` that the code wrote before the reshape of
issue 8. Those files are never rewritten: keys may be renamed (``RENAMED``, applied to the old
file before comparing) and the values listed in ``VALUE_CHANGES`` may change; nothing else."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tokentop import report
from tokentop.config import Config, CostConfig
from tokentop.demo import simulated_snapshots
from tokentop.history import Store
from tokentop.snapshot_json import snapshot_dict

GOLDEN = Path(__file__).parent / "fixtures" / "golden"
TICKS, SEED = 130, 5

# Per-run values: the temp file, the wall time the session was opened, the demo's process id.
VOLATILE_KEYS = {"db_path", "started_unix_s", "started_utc", "ended_unix_s", "ended_utc", "pid"}

# The summary's keys (JSON, at any depth) and CSV columns renamed since the golden files were
# written: one vocabulary (the busy share is busy seconds over watched seconds, not NVML's GPU
# utilisation; an endpoint is a stats URL tokentop reads). Summary JSON schema 1 -> 2.
RENAMED = {
    "utilization_pct": "busy_pct",  # host and per-GPU figures; CSV column
    "engine_step_s": "endpoint_step_s",  # rate_windows
    "busy_s": "busy_gpu_s",  # busy GPU-seconds, the host's summed over its GPUs (issue 9 item 15)
}
# Renamed at the top level only: the list of per-endpoint rows. Each GPU keeps ``engines``, the
# names of the endpoints whose engines run on it.
TOP_LEVEL_RENAMED = {"engines": "endpoints"}

# The only values allowed to differ from the golden files: (file, JSON key path) -> (old, new).
VALUE_CHANGES: dict[tuple[str, tuple[str, ...]], tuple[Any, Any]] = {
    ("summary.json", ("schema_version",)): (1, 2),
    # Issue 9 item 15: the snapshot's busy time is busy GPU-seconds as in the summary; the host's
    # was the GPUs' mean (112.75 s = 902 GPU-seconds / 8 GPUs). Snapshot JSON schema 1 -> 2.
    ("snapshot.json", ("schema_version",)): (1, 2),
    ("snapshot.json", ("host", "session", "busy_gpu_s")): (112.75, 902.0),
}

# Keys added since the golden files were written, with their values here: (file, JSON key path) ->
# value. Summary JSON schema 2 gained them without a bump (issue 10, items 2 and 3): which command
# recorded the session and whether its host was simulated (this recording: ``Store.open``'s
# default origin, a plain config), and how many fixed windows the host's peaks are over.
ADDED: dict[tuple[str, tuple[str, ...]], Any] = {
    ("summary.json", ("session", "origin")): "record",
    ("summary.json", ("session", "simulated")): False,
    ("summary.json", ("rate_windows", "count")): 13,  # 129 s: twelve 10 s windows and one of 9 s
}

# ``RENAMED`` applies to the summary only; the snapshot's JSON has its own renames (schema 1 -> 2:
# ``session.busy_s`` of the host and of each GPU, issue 9 item 15).
RENAMES_APPLY_TO = {"summary.json", "summary.csv"}
SNAPSHOT_RENAMED = {"busy_s": "busy_gpu_s"}


def _scrub(value: object) -> object:
    if isinstance(value, dict):
        return {k: ("<volatile>" if k in VOLATILE_KEYS else _scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _renamed(value: object, renames: dict[str, str]) -> object:
    if isinstance(value, dict):
        return {renames.get(k, k): _renamed(v, renames) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, renames) for v in value]
    return value


def _expected_json(name: str, old: dict[str, Any]) -> dict[str, Any]:
    new = _renamed(old, RENAMED if name in RENAMES_APPLY_TO else SNAPSHOT_RENAMED)
    assert isinstance(new, dict)
    if name in RENAMES_APPLY_TO:
        new = {TOP_LEVEL_RENAMED.get(k, k): v for k, v in new.items()}
    for (file, path), (before, after) in VALUE_CHANGES.items():
        if file != name:
            continue
        *parents, key = path
        node = new
        for parent in parents:
            node = node[parent]
        assert node[key] == before, f"{name}: {'.'.join(path)} was {node[key]!r} in the golden file, not {before!r}"
        node[key] = after
    for (file, path), value in ADDED.items():
        if file != name:
            continue
        *parents, key = path
        node = new
        for parent in parents:
            node = node[parent]
        assert key not in node, f"{name}: {'.'.join(path)} is already in the golden file"
        node[key] = value
    return new


def _expected_csv(name: str, old: str) -> str:
    if name not in RENAMES_APPLY_TO:
        return old
    header, *rows = list(csv.reader(io.StringIO(old)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([RENAMED.get(column, column) for column in header])
    writer.writerows(rows)
    assert out.getvalue().count("\n") == old.count("\n")  # the rows themselves pass through as they were
    return out.getvalue()


def _dump(value: object) -> str:
    return json.dumps(value, indent=1, sort_keys=True)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # Issue 9 item 16 made energy_in_rate default to true in cloud mode; the golden files were
    # written with the old default (energy added to the rate), so the recording states it.
    cost = CostConfig(energy_in_rate=False)
    snapshots = simulated_snapshots(TICKS, seed=SEED, cost=cost)
    db = tmp_path_factory.mktemp("golden") / "history.db"
    config = Config(cost=cost)
    store = Store.open(db, host="golden", version="0", config=config.public_dict())
    for snap in snapshots:
        store.append(snap)
    store.close()
    result = report.summarize(db)
    return {
        "summary.json": _dump(_scrub(report.to_json_dict(result))),
        "summary.csv": report.render_csv(result),
        "snapshot.json": _dump(_scrub(snapshot_dict(snapshots[-1], config.cost))),
    }


@pytest.mark.parametrize("name", ["summary.json", "summary.csv", "snapshot.json"])
def test_same_figures_as_before_the_reshape(outputs: dict[str, str], name: str) -> None:
    golden = (GOLDEN / name).read_text()
    if name.endswith(".json"):
        expected = _dump(_expected_json(name, json.loads(golden)))
    else:
        expected = _expected_csv(name, golden)
    assert outputs[name] == expected


def test_the_renames_and_value_changes_are_all_used() -> None:
    """Every entry above matches something in the golden files: none is stale."""
    summary = (GOLDEN / "summary.json").read_text()
    header = (GOLDEN / "summary.csv").read_text().splitlines()[0].split(",")
    for old in RENAMED:
        assert f'"{old}"' in summary or old in header, old
    for old in TOP_LEVEL_RENAMED:
        assert old in json.loads(summary), old
    assert json.loads(summary)["schema_version"] == 1
    assert report.SCHEMA_VERSION == 2
    snapshot = (GOLDEN / "snapshot.json").read_text()
    for old in SNAPSHOT_RENAMED:
        assert f'"{old}"' in snapshot, old
