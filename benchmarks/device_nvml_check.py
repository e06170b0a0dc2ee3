"""Check NvmlReader against nvidia-smi on a real GPU, idle and under a bounded matmul load.

Run from the repository root on a machine with an NVIDIA GPU::

    python benchmarks/device_nvml_check.py [--seconds 60] [--idle 5] [--gpu 0] [--load auto]

It samples ``NvmlReader`` and ``nvidia-smi`` once a second while a child process loads the GPU
(PyTorch bf16 matmuls when PyTorch is installed, otherwise an FMA loop launched through the CUDA
driver API with ctypes: no PyTorch, no network needed). It prints one row per tick, then
comparisons: power (NVML vs ``power.draw.average`` / ``.instant``), energy counter delta vs the
integral of power, utilisation, memory, whether the load's PID is in NVML's process list, that
the monitor itself holds no CUDA context, and the cost of ``reader.read()`` (median, p95).

Exit status: 0 all checks passed or not applicable, 1 a check failed, 2 no GPU (one line).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run without installing

from tokentop.model import GpuSample
from tokentop.nvml import NvmlReader

SMI_GPU_FIELDS = (
    "power.draw",
    "power.draw.average",
    "power.draw.instant",
    "utilization.gpu",
    "memory.used",
    "total_energy_consumption",
)
MIB = 1024 * 1024

LOAD_TORCH = r"""
import sys, time
import torch
seconds = float(sys.argv[1])
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn_like(a)
torch.cuda.synchronize()
print("load: running (torch bf16 8192^3 matmul)", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(20):
        c = a @ b
    torch.cuda.synchronize()
print("load: done", flush=True)
"""

BURN_PTX = r"""
.version 7.0
.target sm_70
.address_size 64

.visible .entry burn(.param .u64 burn_out, .param .u32 burn_iters)
{
    .reg .pred %p<2>;
    .reg .b32 %r<8>;
    .reg .f32 %f<4>;
    .reg .b64 %rd<4>;

    ld.param.u64 %rd1, [burn_out];
    ld.param.u32 %r1, [burn_iters];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    cvt.rn.f32.u32 %f1, %r5;
    mov.f32 %f2, 0f3F800000;
    mov.f32 %f3, 0f3F000000;
    mov.u32 %r6, 0;
$L_loop:
    fma.rn.f32 %f1, %f1, %f3, %f2;
    fma.rn.f32 %f2, %f2, %f3, %f1;
    add.u32 %r6, %r6, 1;
    setp.lt.u32 %p1, %r6, %r1;
    @%p1 bra $L_loop;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd2, %rd2, %rd3;
    st.global.f32 [%rd2], %f1;
    ret;
}
"""

LOAD_CUDA_DRIVER = r"""
import ctypes, sys, time
seconds = float(sys.argv[1])
PTX = sys.argv[2].encode() + b"\0"
cuda = ctypes.CDLL("libcuda.so.1")
V = ctypes.c_void_p

def check(result, what):
    if result != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(result, ctypes.byref(name))
        raise SystemExit(f"load: {what} failed: {(name.value or b'?').decode()} ({result})")

check(cuda.cuInit(0), "cuInit")
device = ctypes.c_int()
check(cuda.cuDeviceGet(ctypes.byref(device), 0), "cuDeviceGet")
context = V()
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(context), "cuCtxSetCurrent")
module = V()
check(cuda.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(PTX)), "cuModuleLoadData")
kernel = V()
check(cuda.cuModuleGetFunction(ctypes.byref(kernel), module, b"burn"), "cuModuleGetFunction")
blocks, threads = 132 * 32, 256
out = ctypes.c_uint64()
check(cuda.cuMemAlloc_v2(ctypes.byref(out), ctypes.c_size_t(blocks * threads * 4)), "cuMemAlloc")
ballast = ctypes.c_uint64()  # so the process shows some memory
check(cuda.cuMemAlloc_v2(ctypes.byref(ballast), ctypes.c_size_t(4 << 30)), "cuMemAlloc ballast")
iters = ctypes.c_uint32(200000)
params = (V * 2)(ctypes.addressof(out), ctypes.addressof(iters))
cuda.cuLaunchKernel.argtypes = [V] + [ctypes.c_uint] * 7 + [V, V, V]
print("load: running (CUDA driver API FMA loop)", flush=True)
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    check(cuda.cuLaunchKernel(kernel, blocks, 1, 1, threads, 1, 1, 0, None,
                              ctypes.cast(params, V), None), "cuLaunchKernel")
    check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
print("load: done", flush=True)
"""


@dataclass
class Tick:
    t: float  # seconds since the start
    t_mono: float
    sample: GpuSample
    read_s: float
    with_processes: bool
    smi: dict[str, float | None]
    smi_pids: list[int] | None
    load_running: bool


@dataclass
class Load:
    """The child process that keeps the GPU busy; its output is echoed as it comes."""

    process: subprocess.Popen[str]
    running_at: float | None = None
    ended_at: float | None = None
    lines: list[str] = field(default_factory=list)

    def follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self.lines.append(line)
            print(f"    [load] {line}", flush=True)
            if line.startswith("load: running"):
                self.running_at = time.monotonic()

    def poll(self) -> bool:
        """True while the child is alive."""
        if self.process.poll() is None:
            return True
        if self.ended_at is None:
            self.ended_at = time.monotonic()
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]", ...


def run_smi(smi: str, args: list[str]) -> list[list[str]] | None:
    try:
        done = subprocess.run([smi, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def smi_fields_known(smi: str, index: int) -> list[str]:
    """The query fields this nvidia-smi accepts (older ones reject power.draw.average)."""
    known = []
    for name in SMI_GPU_FIELDS:
        if run_smi(smi, ["-i", str(index), f"--query-gpu={name}", "--format=csv,noheader,nounits"]):
            known.append(name)
        else:
            print(f"  nvidia-smi: field {name} not available here")
    return known


def smi_gpu(smi: str, index: int, names: list[str]) -> dict[str, float | None]:
    values: dict[str, float | None] = dict.fromkeys(SMI_GPU_FIELDS)
    if not names:
        return values
    rows = run_smi(smi, ["-i", str(index), f"--query-gpu={','.join(names)}", "--format=csv,noheader,nounits"])
    if rows and len(rows[0]) == len(names):
        values.update({name: number(cell) for name, cell in zip(names, rows[0], strict=True)})
    return values


def smi_pids(smi: str) -> list[int] | None:
    rows = run_smi(smi, ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if rows is None:
        return None
    return [int(row[0]) for row in rows if row and row[0].isdigit()]


def start_load(kind: str, seconds: float, uuid: str) -> Load | None:
    if kind == "auto":
        kind = "torch" if importlib.util.find_spec("torch") else "cuda"
    if kind == "torch":
        argv = [sys.executable, "-c", LOAD_TORCH, str(seconds)]
    else:
        argv = [sys.executable, "-c", LOAD_CUDA_DRIVER, str(seconds), BURN_PTX]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": uuid}
    print(f"starting load ({kind}) for {seconds:.0f} s on {uuid}")
    try:
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as exc:
        print(f"  load could not start: {exc}")
        return None
    load = Load(process)
    threading.Thread(target=load.follow, daemon=True).start()
    return load


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "N/A" if value is None else format(value, spec)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def sample_loop(
    reader: NvmlReader,
    uuid: str,
    smi: str | None,
    smi_names: list[str],
    args: argparse.Namespace,
    started: list[Load],
) -> list[Tick]:
    """Tick until the load has run and the idle tail is over; a started load joins ``started``."""
    index = args.gpu
    load: Load | None = None
    ticks: list[Tick] = []
    start = time.monotonic()
    load_started = False
    hard_stop = start + args.idle + args.seconds + 120  # torch import and CUDA start-up included
    print(
        f"{'t s':>5} {'NVML W':>8} {'src':>10} {'smi avg':>8} {'smi inst':>8} {'smi draw':>8} "
        f"{'util':>5} {'smi':>5} {'mem MiB':>9} {'smi MiB':>9} {'read ms':>8} {'procs':>5}"
    )
    n = 0
    while True:
        now = time.monotonic()
        if not load_started and now - start >= args.idle and args.load != "none":
            load = start_load(args.load, args.seconds, uuid)
            started.extend([load] if load else [])
            load_started = True
        alive = load.poll() if load is not None else False
        finished = load is None or not alive
        tail_from = load.ended_at if load is not None and load.ended_at else start + args.idle
        if (load_started or args.load == "none") and finished and now - tail_from >= args.idle:
            break
        if now > hard_stop:
            print("stopping: the run went past its time bound")
            break
        with_processes = n % 2 == 0
        t0 = time.perf_counter()
        reading = reader.read(now, with_processes)
        read_s = time.perf_counter() - t0
        sample = next(s for s in reading.gpus if s.index == index)
        smi_values = smi_gpu(smi, index, smi_names) if smi else dict.fromkeys(SMI_GPU_FIELDS)
        pids = smi_pids(smi) if smi and with_processes else None
        running = bool(load and alive and load.running_at and now - load.running_at >= 2)
        tick = Tick(now - start, now, sample, read_s, with_processes, smi_values, pids, running)
        ticks.append(tick)
        mem = mib(sample.memory_used_bytes)
        procs = "-" if sample.processes is None else str(len(sample.processes))
        status = "" if sample.status == "ok" else f"  {sample.status.upper()}: {sample.error}"
        print(
            f"{tick.t:5.1f} {fmt(sample.power_w):>8} {sample.power_source or 'N/A':>10} "
            f"{fmt(smi_values['power.draw.average']):>8} "
            f"{fmt(smi_values['power.draw.instant']):>8} "
            f"{fmt(smi_values['power.draw']):>8} {fmt(sample.utilization_pct, '.0f'):>5} "
            f"{fmt(smi_values['utilization.gpu'], '.0f'):>5} {fmt(mem, '.0f'):>9} "
            f"{fmt(smi_values['memory.used'], '.0f'):>9} {read_s * 1000:8.3f} {procs:>5}{status}",
            flush=True,
        )
        n += 1
        time.sleep(max(0.0, start + n * args.interval - time.monotonic()))
    return ticks


def paired(
    ticks: list[Tick], ours: Callable[[Tick], float | None], theirs: Callable[[Tick], float | None]
) -> list[tuple[float, float]]:
    """``(NVML, nvidia-smi)`` pairs of the ticks where both are known."""
    pairs = [(ours(t), theirs(t)) for t in ticks]
    return [(a, b) for a, b in pairs if a is not None and b is not None]


def smi_field(name: str) -> Callable[[Tick], float | None]:
    return lambda tick: tick.smi[name]


def compare(ticks: list[Tick], load: Load | None) -> list[tuple[str, str, str]]:
    """``(check, verdict, detail)`` rows; verdict is OK, FAIL or N/A."""
    verdicts: list[tuple[str, str, str]] = []
    ok = [t for t in ticks if t.sample.status == "ok"]
    busy = [t for t in ok if t.load_running]
    under_load = " under load" if busy else ""

    for smi_name in ("power.draw.average", "power.draw.instant", "power.draw"):
        pairs = paired(busy or ok, lambda t: t.sample.power_w, smi_field(smi_name))
        if not pairs:
            verdicts.append((f"power vs {smi_name}", "N/A", "no pairs of readings"))
            continue
        median_diff = statistics.median(abs(a - b) for a, b in pairs)
        relative = statistics.median(abs(a - b) / max(b, 1.0) for a, b in pairs)
        verdicts.append(
            (
                f"power vs {smi_name}",
                "OK" if median_diff <= 10.0 or relative <= 0.05 else "FAIL",
                f"median |diff| {median_diff:.1f} W ({relative:.1%})"
                f" over {len(pairs)} ticks{under_load};"
                f" NVML median {statistics.median(a for a, _ in pairs):.1f} W",
            )
        )

    verdicts.extend(compare_energy(ok))

    pairs = paired(busy or ok, lambda t: t.sample.utilization_pct, lambda t: t.smi["utilization.gpu"])
    if pairs:
        diff = statistics.median(abs(a - b) for a, b in pairs)
        verdicts.append(
            (
                "utilisation vs nvidia-smi",
                "OK" if diff <= 5 else "FAIL",
                f"median |diff| {diff:.0f} points{under_load};"
                f" NVML median {statistics.median(a for a, _ in pairs):.0f} %",
            )
        )
    pairs = paired(ok, lambda t: mib(t.sample.memory_used_bytes), lambda t: t.smi["memory.used"])
    if pairs:
        diff = statistics.median(a - b for a, b in pairs)
        verdicts.append(
            (
                "memory used vs nvidia-smi",
                "OK" if abs(diff) <= 1024 else "FAIL",
                f"median NVML - smi {diff:+.0f} MiB (v1 memory info counts reserved memory as used)",
            )
        )

    verdicts.append(compare_processes([t for t in busy if t.with_processes], load))
    own = [p.pid for t in ok for p in t.sample.processes or ()]
    if any(t.sample.processes is not None for t in ok):
        holds = os.getpid() in own
        verdicts.append(
            (
                "monitor holds no CUDA context",
                "FAIL" if holds else "OK",
                f"own PID {os.getpid()} in NVML process lists: {holds}",
            )
        )
    return verdicts


def compare_energy(ok: list[Tick]) -> list[tuple[str, str, str]]:
    """Counter delta vs the integral of power over the same span (and vs nvidia-smi's counter)."""
    points = [
        (t.t_mono, t.sample.power_w, t.sample.energy_counter_mj, t.smi["total_energy_consumption"])
        for t in ok
        if t.sample.power_w is not None and t.sample.energy_counter_mj is not None
    ]
    if len(points) < 3:
        return [("energy counter vs power integral", "N/A", "energy counter or power not available")]
    (t_first, _, first_mj, smi_first), (t_last, _, last_mj, smi_last) = points[0], points[-1]
    counter_j = (last_mj - first_mj) / 1000
    if counter_j < 0:
        return [("energy counter vs power integral", "N/A", "counter went back (driver reload?)")]
    integral_j = sum((a[1] + b[1]) / 2 * (b[0] - a[0]) for a, b in itertools.pairwise(points))
    relative = abs(counter_j - integral_j) / max(integral_j, 1.0)
    verdicts = [
        (
            "energy counter vs power integral",
            "OK" if relative <= 0.05 else "FAIL",
            f"counter {counter_j:.0f} J, integral {integral_j:.0f} J over {t_last - t_first:.0f} s"
            f" ({relative:.1%} apart)",
        )
    ]
    if smi_first is not None and smi_last is not None:
        smi_delta = smi_last - smi_first
        close = counter_j > 0 and abs(smi_delta / 1000 - counter_j) / counter_j <= 0.05
        verdicts.append(
            (
                "energy counter vs nvidia-smi total_energy_consumption",
                "OK" if close else "FAIL",
                f"NVML {counter_j:.0f} J; nvidia-smi delta {smi_delta:.0f} (as reported; expected mJ)",
            )
        )
    return verdicts


def compare_processes(process_ticks: list[Tick], load: Load | None) -> tuple[str, str, str]:
    name = "load PID in NVML process list"
    if load is None or not process_ticks:
        return (name, "N/A", "no process ticks under load")
    pid = load.process.pid
    listed = [p for t in process_ticks for p in t.sample.processes or () if p.pid == pid]
    in_smi = any(t.smi_pids and pid in t.smi_pids for t in process_ticks)
    detail = f"PID {pid}: NVML {'yes' if listed else 'no'}, nvidia-smi {'yes' if in_smi else 'no'}"
    if listed:
        detail += f"; used memory {fmt(mib(listed[-1].used_memory_bytes), '.0f')} MiB"
    if not listed and not in_smi:
        detail += " (PID namespace of a container? NVML reports host PIDs)"
    return (name, "OK" if listed or not in_smi else "FAIL", detail)


def mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (default 60)")
    parser.add_argument("--idle", type=float, default=5.0, help="idle seconds before and after the load")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between ticks")
    parser.add_argument("--gpu", type=int, default=0, help="NVML index of the GPU to load")
    parser.add_argument("--load", choices=("auto", "torch", "cuda", "none"), default="auto")
    args = parser.parse_args()

    reader = NvmlReader()
    reader.open()
    if not reader.available:
        print(f"no GPU: {reader.reason}", file=sys.stderr)
        return 2
    started: list[Load] = []
    try:
        first = reader.read(time.monotonic(), with_processes=True)
        print(f"driver {first.driver_version}; {len(first.gpus)} GPU(s)")
        for sample in first.gpus:
            total = fmt(mib(sample.memory_total_bytes), ".0f")
            print(
                f"  GPU {sample.index} {sample.uuid} {sample.name}: {total} MiB,"
                f" status {sample.status}, power source {sample.power_source or 'N/A'},"
                f" limit {fmt(sample.power_limit_w)} W,"
                f" energy counter {fmt(sample.energy_counter_mj, 'd')} mJ"
            )
            unavailable = reader.unavailable_queries(sample.uuid)
            print(f"    not asked: {unavailable or 'nothing'}")
        target = next((s for s in first.gpus if s.index == args.gpu), None)
        if target is None:
            print(f"GPU index {args.gpu} not found", file=sys.stderr)
            return 2
        smi = shutil.which("nvidia-smi")
        smi_names = smi_fields_known(smi, args.gpu) if smi else []
        if not smi:
            print("nvidia-smi not found: NVML figures only")
        if args.load != "none" and not importlib.util.find_spec("torch"):
            print("PyTorch not installed: the load is a CUDA driver API FMA loop instead")

        ticks = sample_loop(reader, target.uuid, smi, smi_names, args, started)
        load = started[0] if started else None

        print("\nchecks")
        verdicts = compare(ticks, load)
        for name, verdict, detail in verdicts:
            print(f"  {verdict:4} {name}: {detail}")
        for label, chosen in (("read() without processes", False), ("read() with processes", True)):
            times = [t.read_s * 1000 for t in ticks if t.with_processes is chosen]
            if times:
                print(
                    f"  time {label}: median {statistics.median(times):.3f} ms,"
                    f" p95 {percentile(times, 0.95):.3f} ms over {len(times)} reads"
                )
        states = {t.sample.status for t in ticks}
        print(f"  sample states seen: {sorted(states)}")
        return 1 if any(v == "FAIL" for _, v, _ in verdicts) else 0
    finally:
        for load in started:
            load.stop()
        reader.close()


if __name__ == "__main__":
    sys.exit(main())
