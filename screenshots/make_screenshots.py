"""Render the README pictures of the live view from the demo host (SVG, deterministic).

    python screenshots/make_screenshots.py [--out screenshots]

The demo runs its real code paths (fake NVML under the real reader, vLLM-like pages on
loopback, the real sampler) on a fake clock with seed 7, so every run draws the same
pictures; loopback ports are written as 8000-8002.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokentop.config import Config
from tokentop.demo import simulated_snapshots
from tokentop.model import Snapshot
from tokentop.tui.app import TokentopApp
from tokentop.tui.host import FixedHost, HostUsage
from tokentop.tui.processes import ProcessInfo

GIB = 2**30
# What the pictures say of the host itself, and of the demo's engine processes (PIDs 4000-4002).
HOST = FixedHost(
    HostUsage(0.12, 48 * GIB, 251 * GIB),
    {
        4000 + i: ProcessInfo("python3", "serve", f"python3 -m vllm.entrypoints.openai.api_server --model {model}")
        for i, model in enumerate(("meta-llama/Llama-3.3-70B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"))
    },
)


@dataclass(frozen=True)
class Picture:
    name: str
    size: tuple[int, int]
    keys: tuple[str, ...] = ()
    theme: str | None = None
    caption: str = ""
    ascii_only: bool = False


PICTURES = (
    Picture("live.svg", (120, 40), caption="the live view of the demo host, 120x40"),
    Picture("live-80x24.svg", (80, 24), caption="the same at 80x24: columns give way, every GPU stays"),
    Picture("help-80x24.svg", (80, 24), keys=("question_mark",), caption="help at 80x24 (?): it scrolls"),
    Picture("live-light.svg", (120, 40), theme="textual-light", caption="light theme (t)"),
    Picture("host-10min.svg", (120, 40), keys=("g", "w"), caption="graph of the whole host over 10 minutes (g, w)"),
    Picture("sorted-by-cost.svg", (120, 40), keys=("m",), caption="sorted by $/Mtok, dearest first (m)"),
    Picture("details.svg", (120, 40), keys=("down", "down", "down", "down", "d"), caption="details of GPU 4 (d)"),
    Picture("help.svg", (120, 48), keys=("question_mark",), caption="help (?)"),
    Picture("processes.svg", (120, 40), keys=("P",), caption="the processes on the GPUs (P)"),
    Picture("live-ascii.svg", (120, 40), ascii_only=True, caption="--ascii, for terminals without Unicode"),
)


async def render(picture: Picture, snapshots: Iterable[Snapshot], out: Path) -> Path:
    app = TokentopApp(Config(ascii_only=picture.ascii_only), host_name="gpu-node-01", handle_signals=False, host=HOST)
    async with app.run_test(size=picture.size) as pilot:
        if picture.theme:
            app.theme = picture.theme
        for snapshot in snapshots:
            app.post_snapshot(snapshot)
        await pilot.pause()
        for key in picture.keys:
            await pilot.press(key)
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        path = out / picture.name
        path.write_text(app.export_screenshot(title=f"tokentop: {picture.caption}"))
    return path


def sixteen_gpu_snapshots(ticks: int = 3) -> list[Snapshot]:
    """A host of 16 fake GPUs (no engine) read by the real NVML reader on a simulated clock."""
    from tokentop.demo import SimulatedClock, ticked
    from tokentop.nvml.fake import FakeNvml
    from tokentop.nvml.reader import NvmlReader
    from tokentop.sampler import Sampler

    clock = SimulatedClock()
    sampler = Sampler(
        Config(discover=False), NvmlReader(lib=FakeNvml.healthy(count=16)), clock=clock, wall_clock=clock.wall
    )
    return ticked(sampler, clock, ticks)


SIXTEEN_GPUS = Picture("live-16gpus-80x24.svg", (80, 24), caption="16 GPUs at 80x24: every GPU keeps a row")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["COLORTERM"] = "truecolor"  # the full palette, whatever terminal this runs in
    snapshots = simulated_snapshots(660)  # 11 minutes: enough for the 10-minute graph
    for picture in PICTURES:
        path = asyncio.run(render(picture, snapshots, args.out))
        print(f"wrote {path}  ({picture.caption})")
    path = asyncio.run(render(SIXTEEN_GPUS, sixteen_gpu_snapshots(), args.out))
    print(f"wrote {path}  ({SIXTEEN_GPUS.caption})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
