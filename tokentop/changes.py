"""What changed between two ticks, in words, to be said once rather than every second: an
endpoint going down or coming back, a GPU lost or back, a message that was not there before.
The live view notifies these; ``record`` and ``export`` write them on stderr."""

from __future__ import annotations

from dataclasses import dataclass

from tokentop.model import Snapshot


@dataclass(frozen=True, slots=True)
class Change:
    text: str
    severity: str  # "error" | "warning" | "information"


def changes(previous: Snapshot | None, snapshot: Snapshot) -> list[Change]:
    out: list[Change] = []
    before = {e.sample.name: e.sample.status for e in previous.endpoints} if previous else {}
    for endpoint in snapshot.endpoints:
        sample, old = endpoint.sample, before.get(endpoint.sample.name)
        if sample.status == "error" and old != "error":
            out.append(Change(f"{sample.name} is down: {sample.error or 'no answer'}", "error"))
        elif sample.status == "up" and old == "error":
            out.append(Change(f"{sample.name} is back up", "information"))
    gpus_before = {g.sample.uuid: g.sample.status for g in previous.gpus} if previous else {}
    for gpu in snapshot.gpus:
        status, old = gpu.sample.status, gpus_before.get(gpu.sample.uuid, "ok")
        if status != "ok" and old == "ok":
            out.append(Change(f"GPU {gpu.sample.index} {status}: {gpu.sample.error or 'no reading'}", "error"))
        elif status == "ok" and old != "ok":
            out.append(Change(f"GPU {gpu.sample.index} is back", "information"))
    old_messages = set(previous.messages) if previous else set()
    out += [Change(text, "warning") for text in snapshot.messages if text not in old_messages]
    return out


class ChangeLog:
    """Keeps the previous tick so that each call gives only what is new since the last."""

    def __init__(self) -> None:
        self._previous: Snapshot | None = None

    def lines(self, snapshot: Snapshot) -> list[str]:
        new = changes(self._previous, snapshot)
        self._previous = snapshot
        return [change.text for change in new]
