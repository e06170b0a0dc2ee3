"""The first look: a GPU reading derived alone, shown while the endpoints' first reads (which can
take seconds) are under way, so that the live view draws every GPU row at once."""

from __future__ import annotations

import dataclasses

from tokentop.config import Config
from tokentop.derive.deriver import Deriver
from tokentop.model import GpuReading, Snapshot


def gpus_alone(config: Config, reading: GpuReading, t_wall: float) -> Snapshot:
    """``reading`` as a snapshot with no endpoint, marked ``first_look``. It comes from a deriver
    of its own, so nothing of it is counted: the session's first tick is still its first."""
    return dataclasses.replace(Deriver.for_config(config).step(reading, (), {}, t_wall), first_look=True)
