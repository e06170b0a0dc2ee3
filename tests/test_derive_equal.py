"""The Deriver made cheaper per GPU per tick (issue 13) gives every figure the one before it gave,
to the bit: long hostile sequences (derive_replay.py) replayed through both, every snapshot
compared as text. The one before is this tree with the derive package and cost.py of
``REFERENCE`` (the last commit before the change), run in a child process.

Needs git and that commit (a shallow clone has none): skipped, with the reason, without them,
unless TOKENTOP_REQUIRE_DERIVE_REFERENCE=1. Once an intended change of a figure lands, move
``REFERENCE`` to a commit that has it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from derive_replay import replay

REFERENCE = "13ad932d83a66e8c6e910b1875c36e0bdff2f282"
OWN_FILES = ("derive/__init__.py", "derive/counters.py", "derive/deriver.py", "derive/windows.py", "cost.py")
ROOT = Path(__file__).resolve().parent.parent
SEEDS = range(48)  # six cost models (derive_replay.cost_configs) x eight
TICKS = 300


def _reference_tree(into: Path) -> Path:
    """This tree's ``tokentop`` with the reference commit's derive files and cost.py."""
    try:
        texts = {
            name: subprocess.run(
                ["git", "show", f"{REFERENCE}:tokentop/{name}"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            for name in OWN_FILES
        }
    except (OSError, subprocess.CalledProcessError) as error:
        if os.environ.get("TOKENTOP_REQUIRE_DERIVE_REFERENCE") == "1":
            raise
        pytest.skip(f"the reference deriver cannot be had from git ({REFERENCE[:12]}): {error}")
    shutil.copytree(ROOT / "tokentop", into / "tokentop", ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in texts.items():
        (into / "tokentop" / name).write_bytes(text)
    return into


def test_every_snapshot_is_the_reference_derivers(tmp_path: Path) -> None:
    tree = _reference_tree(tmp_path)
    code = (
        f"import sys; sys.path[:0] = [{str(tree)!r}, {str(Path(__file__).parent)!r}]; import derive_replay, tokentop;"
        f" assert tokentop.__file__.startswith({str(tree)!r}), tokentop.__file__;"
        f" derive_replay.main({list(SEEDS)}, {TICKS})"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    before = json.loads(child.stdout)
    compared = 0
    for seed, reference in zip(SEEDS, before):
        now = replay(seed, TICKS)
        assert len(now) == len(reference)
        for tick, (got, expected) in enumerate(zip(now, reference)):
            assert got == expected, f"seed {seed}, tick {tick}"
        compared += len(now)
    assert compared == len(SEEDS) * TICKS
