"""``tokentop summary --ssh``: each host's own ``summary --format json`` over the same range, run
over ssh in parallel (``SUMMARY_TIMEOUT_S`` at most), read back as ``HostSummary`` and added up
by ``fleet.summary.fleet_summary`` (sums, never an average of ratios).

The range goes to every host as UTC ISO times, so each host cuts its own history by its own
clock; a host whose clock is off shifts its range by as much. Without ``--since``, each host
summarises its own latest session, and a note says when their ranges differ. What comes back is
checked as a feed is (``feed.JsonObject``): a host that sends what is not a summary is down with
the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any

from tokentop.config import Config, SshHostConfig
from tokentop.fleet.feed import READ_CHUNK, FeedError, JsonObject
from tokentop.fleet.ssh_command import close_pipes, drain_stderr, end_process, failure_reason, ssh_argv
from tokentop.fleet.summary import FleetSummary, HostSummary, fleet_summary
from tokentop.report.figures import EndpointSummary, Figures, GpuSummary
from tokentop.report.tables import FIGURE_KEYS
from tokentop.report.tables import SCHEMA_VERSION as SUMMARY_SCHEMA_VERSION
from tokentop.text import safe_text

SUMMARY_TIMEOUT_S = 60.0
MAX_SUMMARY_BYTES = 32 * 1024 * 1024
PARALLEL = 16
RANGES_APART_S = 60.0  # hosts' own ranges further apart than this are noted


def summarize(config: Config, since: float | None, until: float | None) -> FleetSummary:
    """Every host of ``config.hosts`` summarised over ``since``..``until`` (Unix s; None: each
    host's default, its latest session) and the fleet's figures."""
    args = ["summary", "--format", "json"]
    for flag, t in (("--since", since), ("--until", until)):
        if t is not None:
            args += [flag, datetime.fromtimestamp(t, tz=timezone.utc).isoformat()]
    with ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(config.hosts)))) as pool:
        results = list(pool.map(lambda host: _host_summary(host, args), config.hosts))
    hosts = [h for h, _ in results]
    ranges = [r for _, r in results if r is not None]
    now = time.time()  # the range said when no host gave one
    start = since if since is not None else min((r[0] for r in ranges), default=now)
    end = until if until is not None else max((r[1] for r in ranges), default=max(start, now))
    names = [h.name for h in config.hosts]
    return fleet_summary(f"ssh: {', '.join(names)}", "ssh", start, end, hosts, _range_notes(ranges))


def _range_notes(ranges: Sequence[tuple[float, float]]) -> list[str]:
    """A note when the hosts summarised different ranges (each its own latest session)."""
    if len(ranges) < 2:
        return []
    starts, ends = [r[0] for r in ranges], [r[1] for r in ranges]
    if max(starts) - min(starts) <= RANGES_APART_S and max(ends) - min(ends) <= RANGES_APART_S:
        return []
    return [
        "the hosts' ranges differ (each its own latest session; --since and --until give them one): "
        "fleet sums add what each host did over its own range, and its tok/s, W and $/h means add "
        "each host's mean over its own"
    ]


def _host_summary(host: SshHostConfig, args: Sequence[str]) -> tuple[HostSummary, tuple[float, float] | None]:
    """One host's summary and its range, or a down host with the reason."""
    ran = run_bounded(ssh_argv(host, args), SUMMARY_TIMEOUT_S, MAX_SUMMARY_BYTES)
    if ran.failure is not None:
        return _down(host, ran.failure), None
    if ran.code != 0:
        if ran.code == 2 and ran.stderr and ran.stderr[-1].startswith("tokentop: "):  # the remote's own line
            reason = f"no summary: {ran.stderr[-1].removeprefix('tokentop: ')}"
        else:
            reason = failure_reason(ran.code, ran.stderr, what="summary")
        return _down(host, reason), None
    try:
        return host_summary_from_json(host.name, ran.out)
    except FeedError as exc:
        return _down(host, str(exc)), None


def _down(host: SshHostConfig, reason: str) -> HostSummary:
    return HostSummary(name=host.name, state="down", reason=reason, gpu_count=0, figures=None)


@dataclass(frozen=True)
class Ran:
    """How a bounded run went: ``failure`` when it could not run or was ended (then ``out`` is
    what came before, and means nothing), else its exit status and output."""

    code: int | None
    out: bytes
    stderr: list[str]  # its last lines, made safe
    failure: str | None = None


def run_bounded(argv: list[str], timeout_s: float, limit: int) -> Ran:
    """Run ``argv`` (no input) for at most ``timeout_s``, keeping at most ``limit`` bytes of its
    output: past either it is ended, and ``failure`` says which."""
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        return Ran(None, b"", [], f"cannot run ssh: {safe_text(exc.strerror or exc)}")
    stderr: deque[str] = deque(maxlen=4)
    out = bytearray()
    over = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while chunk := os.read(fd, READ_CHUNK):
            if len(out) + len(chunk) > limit:
                over.set()
                end_process(proc)
                return
            out.extend(chunk)

    readers = [
        threading.Thread(target=read_out, daemon=True),
        threading.Thread(target=drain_stderr, args=(proc, stderr), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        code: int | None = proc.wait(timeout_s)
        failure = None
    except subprocess.TimeoutExpired:
        end_process(proc)
        code, failure = None, f"no answer within {timeout_s:g} s"
    for reader in readers:
        reader.join(2.0)
    close_pipes(proc)
    if over.is_set():
        failure = f"its answer is over {limit // (1024 * 1024)} MiB: not read"
    return Ran(code, bytes(out), list(stderr), failure)


def host_summary_from_json(name: str, raw: bytes) -> tuple[HostSummary, tuple[float, float]]:
    """A host's ``summary --format json`` as a HostSummary and the range it covers."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise FeedError("its summary is not JSON") from None
    o = JsonObject.of(data, "summary")
    version = data.get("schema_version")
    if version != SUMMARY_SCHEMA_VERSION:
        shown = safe_text(version, 20)
        raise FeedError(f"remote tokentop speaks summary schema {shown}; this one reads {SUMMARY_SCHEMA_VERSION}")
    span = o.obj("range")
    host = None if o.data.get("host") is None else o.obj("host")
    gpus = tuple(_gpu(JsonObject.of(g, "summary.gpus[]")) for g in o.items("gpus"))
    return (
        HostSummary(
            name=name,
            state="ok",
            reason=None,
            gpu_count=host.int_("gpu_count") if host is not None else 0,
            figures=figures_from(host) if host is not None else None,
            unpriced_gpus=host.texts("unpriced_gpus") if host is not None else (),
            gpus=gpus,
            endpoints=tuple(_endpoint(JsonObject.of(e, "summary.endpoints[]")) for e in o.items("endpoints")),
        ),
        (span.num("since_unix_s"), span.num("until_unix_s")),
    )


def figures_from(o: JsonObject) -> Figures:
    """``Figures`` from the keys ``report.tables.figures_json`` writes, each type checked."""
    values: dict[str, Any] = {}
    for f in fields(Figures):
        key = FIGURE_KEYS[f.name]
        values[f.name] = o.num_or_none(key) if "None" in str(f.type) else o.num(key)
    return Figures(**values)


def _gpu(o: JsonObject) -> GpuSummary:
    return GpuSummary(
        index=o.int_or_none("index"),
        uuid=o.text("uuid"),
        name=o.text("name"),
        engines=o.texts("engines"),
        energy_method=o.text_or_none("energy_method"),
        energy_integrated_ticks=o.int_("energy_integrated_ticks"),
        energy_unmeasured_ticks=o.int_("energy_unmeasured_ticks"),
        price_usd_per_gpu_hour=o.num_or_none("price_usd_per_gpu_hour"),
        price_source=o.text_or_none("price_source"),
        figures=figures_from(o),
    )


def _endpoint(o: JsonObject) -> EndpointSummary:
    indices = o.items("gpu_indices")
    if not all(i is None or (isinstance(i, int) and not isinstance(i, bool)) for i in indices):
        raise FeedError("summary.endpoints[].gpu_indices is not a list of whole numbers")
    return EndpointSummary(
        name=o.text("name"),
        url=o.text("url"),
        kind=o.text_or_none("kind"),
        model=o.text_or_none("model"),
        gpus=o.texts("gpus"),
        gpu_indices=tuple(indices),
        duration_s=o.num("duration_s"),
        tokens_in=o.num("tokens_in"),
        tokens_out=o.num("tokens_out"),
        tok_s_in_mean=o.num_or_none("tok_s_in_mean"),
        tok_s_out_mean=o.num_or_none("tok_s_out_mean"),
        requests_completed=o.num_or_none("requests_completed"),
        ttft_p50_s_mean=o.num_or_none("ttft_p50_s_mean"),
        ttft_p95_s_mean=o.num_or_none("ttft_p95_s_mean"),
        itl_p50_s_mean=o.num_or_none("itl_p50_s_mean"),
    )
