"""A FleetReading as plain JSON-ready data (``tokentop snapshot --json --ssh/--prometheus``).

The fleet's figures, then each host: its state, reason, age and clock offset, and its snapshot
in ``tokentop.snapshot_json``'s own schema (so a script reads one host of a fleet exactly as it
reads ``snapshot --json`` on that host). Two keys of a host's snapshot are ``null`` here: the
reading does not carry the host's ``cost_inputs`` or its ``tokentop_version``. Each host's
``time_unix_s`` is the host's own clock; ``age_s`` is measured on the viewer's.
"""

from __future__ import annotations

from typing import Any

from tokentop import __version__
from tokentop.config import CostConfig
from tokentop.fleet.model import FleetFigures, FleetHost, FleetReading
from tokentop.snapshot_json import SCHEMA_VERSION as SNAPSHOT_SCHEMA_VERSION
from tokentop.snapshot_json import snapshot_dict, window_dict

SCHEMA_VERSION = 1
_UNKNOWN_COST = CostConfig()  # snapshot_dict writes cost inputs; a fleet reading has none


def fleet_dict(fleet: FleetFigures) -> dict[str, Any]:
    return {
        "host_count": fleet.host_count,
        "hosts_up": fleet.hosts_up,
        "gpu_count": fleet.gpu_count,
        "engines_up": fleet.engines_up,
        "engines_total": fleet.engines_total,
        "power_w_now": fleet.power_w,
        "usd_per_hour_now": fleet.usd_per_hour_now,
        "usd_per_mtok": fleet.usd_per_mtok,
        "busy_usd_per_mtok": fleet.busy_usd_per_mtok,
        "unpriced_hosts": list(fleet.unpriced_hosts),
        "rate_window": window_dict(fleet.rate_window),
        "cost_window": window_dict(fleet.cost_window),
        "priced_window": window_dict(fleet.priced_window),
    }


def host_dict(host: FleetHost) -> dict[str, Any]:
    snapshot = None
    if host.snapshot is not None:
        snapshot = {**snapshot_dict(host.snapshot, _UNKNOWN_COST), "cost_inputs": None, "tokentop_version": None}
    return {
        "name": host.name,
        "state": host.state,
        "reason": host.reason,
        "age_s": host.age_s,
        "clock_offset_s": host.clock_offset_s,
        "models": list(host.models),
        "engines_up": host.engines_up,
        "engines_total": host.engines_total,
        "join": host.join,
        "snapshot": snapshot,
    }


def reading_dict(reading: FleetReading) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "snapshot_schema_version": SNAPSHOT_SCHEMA_VERSION,
        "tokentop_version": __version__,
        "time_unix_s": reading.t_wall,
        "source": reading.source,
        "mode": reading.mode,
        "rate_window_s": reading.rate_window_s,
        "cost_window_s": reading.cost_window_s,
        "status": reading.status,
        "stale": reading.stale,
        "messages": list(reading.messages),
        "fleet": fleet_dict(reading.fleet),
        "hosts": [host_dict(h) for h in reading.hosts],
    }
