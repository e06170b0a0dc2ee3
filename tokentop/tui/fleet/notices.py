"""What the fleet view tells the user in words: the message line (the source's trouble, its
messages, hosts down or stale with the reason, hosts without a price) and the notifications of
changes (a host goes down, comes back, goes stale; the source fails or recovers). Plain
functions of the readings."""

from __future__ import annotations

from tokentop.fleet.model import FleetHost, FleetReading

MAX_HOST_MESSAGES = 20  # the message line shows one; the help screen lists them all up to this


def _said(host: FleetHost) -> str:
    why = f": {host.reason}" if host.reason else ""
    return f"{host.name} {host.state.upper()}{why}"


def fleet_messages(reading: FleetReading | None) -> tuple[str, ...]:
    """What is wrong as of the reading shown, most general first."""
    if reading is None:
        return ()
    messages = tuple(m for m in (reading.status,) if m) + tuple(reading.messages)
    troubled = [h for h in reading.hosts if h.state in ("down", "stale")]
    troubled.sort(key=lambda h: (h.state != "down", h.name))
    messages += tuple(_said(h) for h in troubled[:MAX_HOST_MESSAGES])
    if len(troubled) > MAX_HOST_MESSAGES:
        messages += (f"… and {len(troubled) - MAX_HOST_MESSAGES} more hosts down or stale (sort by state: s)",)
    unpriced = reading.fleet.unpriced_hosts
    if unpriced:
        messages += (f"no price for {', '.join(unpriced)}: left out of the fleet's $ figures (set cost.gpu_hour_usd)",)
    return messages


def fleet_changes(previous: FleetReading | None, reading: FleetReading) -> list[tuple[str, str]]:
    """(text, severity) for each change worth a notification since ``previous``."""
    if previous is None:
        return []
    out: list[tuple[str, str]] = []
    if reading.status and reading.status != previous.status:
        out.append((reading.status, "error"))
    elif previous.status and not reading.status:
        out.append((f"{reading.source}: answering again", "information"))
    before = {h.name: h.state for h in previous.hosts}
    for host in reading.hosts:
        was = before.get(host.name)
        if was is None or was == host.state:
            continue
        if host.state == "down":
            out.append((f"{_said(host)}", "error"))
        elif host.state == "stale":
            out.append((f"{_said(host)}", "warning"))
        elif host.state == "up" and was in ("down", "stale"):
            out.append((f"{host.name} is back up", "information"))
    return out
