"""How figures are written for people: watts, tok/s, $, $/Mtok, bytes, durations, N/A, idle.

One place, so the live view and the summaries agree. Every function takes ``None`` for "not
known" and writes ``N/A``; none of them raises on odd input (NaN and infinities are "N/A" too).
The screen's styles stay small and predictable (a number never needs more than 6 characters);
the report styles at the end (``fmt_count``, ``fmt_sig``, ``fmt_kwh``, ``fmt_local_time``) keep
every digit a table in a file has room for. GPU names are shortened here too, for both.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable

NA = "N/A"
IDLE = "idle"  # a full window in which no token flowed
WARMING = "warming"  # a window still filling in which no token flowed (yet)
DASH = "—"  # nothing to show: e.g. $/Mtok of a GPU that serves no engine

_PARTIAL_BLOCKS = " ▏▎▍▌▋▊▉"
_FULL_BLOCK = "█"


def _known(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def fmt_number(value: float | None) -> str:
    """A compact magnitude: ``0.42``, ``3.1``, ``850``, ``1.23k``, ``12.3k``, ``456k``, ``1.20M``."""
    if not _known(value):
        return NA
    assert value is not None
    sign = "-" if value < 0 else ""
    x = abs(value)
    if x < 1:
        return sign + f"{x:.2f}"
    if x < 10:
        return sign + f"{x:.1f}"
    if x < 999.5:
        return sign + f"{x:.0f}"
    for scale, suffix in ((1e3, "k"), (1e6, "M"), (1e9, "G"), (1e12, "T")):
        y = x / scale
        if y < 9.995:
            return f"{sign}{y:.2f}{suffix}"
        if y < 99.95:
            return f"{sign}{y:.1f}{suffix}"
        if y < 999.5:
            return f"{sign}{y:.0f}{suffix}"
    return f"{sign}{x:.0e}"


def fmt_tok_s(value: float | None) -> str:
    """Tokens per second, without the unit (the column header names it)."""
    if value == 0:
        return "0"
    if _known(value) and value is not None and 0 < value < 0.05:
        return "<0.1"
    if _known(value) and value is not None and 0 < value < 1:
        return f"{value:.1f}"
    return fmt_number(value)


def fmt_tokens(value: float | None) -> str:
    """A count of tokens: ``850``, ``12.3k``, ``4.56M``."""
    if _known(value) and value is not None and abs(value) < 1000:
        return f"{value:.0f}"
    return fmt_number(value)


def fmt_watts(value: float | None) -> str:
    """``612 W`` or ``3.21 kW``."""
    if not _known(value):
        return NA
    assert value is not None
    if abs(value) < 999.5:
        return f"{value:.0f} W"
    return f"{value / 1000:.2f} kW"


def fmt_power_over_limit(power_w: float | None, limit_w: float | None) -> str:
    """``612/700``: the reading over the enforced limit, watts (limit left out when unknown)."""
    if not _known(power_w):
        return NA if not _known(limit_w) else f"{NA}/{limit_w:.0f}"
    if not _known(limit_w):
        return f"{power_w:.0f}"
    return f"{power_w:.0f}/{limit_w:.0f}"


def fmt_usd(value: float | None) -> str:
    """Money with the precision that matters at its size: ``$0.0042``, ``$0.42``, ``$12.30``,
    ``$123``, ``$12.3k``."""
    if not _known(value):
        return NA
    assert value is not None
    sign = "-" if value < 0 else ""
    x = abs(value)
    if x == 0:
        text = "0.00"
    elif x < 0.01:
        text = f"{x:.4f}"
    elif x < 0.995:
        text = f"{x:.3f}"
    elif x < 99.95:
        text = f"{x:.2f}"
    elif x < 9_999.5:
        text = f"{x:.0f}"
    else:
        text = fmt_number(x)
    return f"{sign}${text}"


def fmt_usd_per_mtok(
    value: float | None, *, tokens_out: float | None = None, serving: bool = True, filling: bool = False
) -> str:
    """Effective $ per million output tokens.

    ``serving=False``: the GPU runs no engine, so there is nothing to divide by (an em dash).
    A known zero ``tokens_out`` means the engine was idle over the window (``idle``), or, while
    the window is still ``filling``, that it is too soon to say (``warming``); any other missing
    value is unknown (``N/A``, e.g. no price for the GPU model).
    """
    if _known(value):
        return fmt_usd(value)
    if not serving:
        return DASH
    if tokens_out is not None and tokens_out <= 0:
        return WARMING if filling else IDLE
    return NA


def fmt_bytes(value: float | None) -> str:
    """Binary units, as ``nvidia-smi`` and ``free`` use: ``512 MiB``, ``131.6 GiB``."""
    if not _known(value):
        return NA
    assert value is not None
    x = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{x:.0f} B"
            return f"{x:.1f} {unit}" if abs(x) < 100 else f"{x:.0f} {unit}"
        x /= 1024
    raise AssertionError("unreachable")


def fmt_gib(value: float | None) -> str:
    """A byte count in whole GiB (``129``), for a column whose header says GiB."""
    if not _known(value):
        return NA
    assert value is not None
    gib = value / 2**30
    return f"{gib:.1f}" if gib < 9.95 else f"{gib:.0f}"


def fmt_pct(fraction_or_pct: float | None, *, fraction: bool = False) -> str:
    """``87%``. Pass ``fraction=True`` for 0-1 values."""
    if not _known(fraction_or_pct):
        return NA
    assert fraction_or_pct is not None
    pct = fraction_or_pct * 100 if fraction else fraction_or_pct
    return f"{pct:.0f}%"


def fmt_temp(value: float | None) -> str:
    """Degrees Celsius without the unit (the header says °C)."""
    return NA if not _known(value) else f"{value:.0f}"


def fmt_latency(seconds: float | None) -> str:
    """``35ms``, ``350ms``, ``1.2s``, ``12s``."""
    if not _known(seconds):
        return NA
    assert seconds is not None
    if seconds < 0.9995:
        ms = seconds * 1000
        return f"{ms:.1f}ms" if ms < 9.95 else f"{ms:.0f}ms"
    return f"{seconds:.1f}s" if seconds < 9.95 else f"{seconds:.0f}s"


def fmt_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``1h02m``, ``2d03h``."""
    if not _known(seconds):
        return NA
    assert seconds is not None
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_window(seconds: float) -> str:
    """A window's length as a column header writes it: ``10s``, ``1m``, ``90s``, ``1h``, ``24h``;
    ``<1s`` for a span under a second (the live view's first two ticks)."""
    if 0 < seconds < 1:
        return "<1s"
    s = round(seconds)
    if s % 3600 == 0 and s >= 3600:
        return f"{s // 3600}h"
    if s % 60 == 0 and s >= 60:
        return f"{s // 60}m"
    return f"{s}s"


def fmt_energy(joules: float | None) -> str:
    """Energy in the unit on an electricity bill: ``12.3 Wh``, ``4.56 kWh``, ``1.23 MWh``."""
    if not _known(joules):
        return NA
    assert joules is not None
    wh = joules / 3600.0
    if abs(wh) < 999.5:
        return f"{wh:.1f} Wh" if abs(wh) < 99.95 else f"{wh:.0f} Wh"
    if abs(wh) < 999_500:
        return f"{wh / 1e3:.2f} kWh" if abs(wh) < 99_950 else f"{wh / 1e3:.0f} kWh"
    return f"{wh / 1e6:.2f} MWh"


def fmt_tok_per_j(value: float | None) -> str:
    """Output tokens per joule: ``0.42``, ``3.1``, ``12``."""
    return fmt_number(value)


def fmt_share(parts: int) -> str:
    """An engine's share of one GPU when it spans ``parts`` GPUs (tensor parallel): ``1/4``."""
    return "1/1" if parts <= 1 else f"1/{parts}"


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar of ``width`` cells in eighths; spaces when unknown. Shape, not colour."""
    if width <= 0:
        return ""
    if not _known(fraction):
        return " " * width
    assert fraction is not None
    eighths = round(min(1.0, max(0.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = _FULL_BLOCK * full + (_PARTIAL_BLOCKS[part] if part else "")
    return text.ljust(width)


# --- report styles: tables in a file, where width is not scarce ------------------------------


def fmt_count(value: float | None) -> str:
    """A count rounded to a whole number, thousands grouped: ``1,301,987``."""
    if not _known(value):
        return NA
    assert value is not None
    return f"{value:,.0f}"


def fmt_sig(value: float | None, digits: int = 3) -> str:
    """``digits`` significant figures (all the integer digits when there are more), thousands
    grouped, never an exponent: ``0.00123``, ``1.23``, ``818``, ``32,700``."""
    if not _known(value):
        return NA
    assert value is not None
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def fmt_kwh(kwh: float | None) -> str:
    """Energy in kWh without the unit (the header says kWh), 4 significant figures:
    ``0.01544``, ``1.235``, ``123.5``."""
    return fmt_sig(kwh, 4)


def fmt_local_time(unix_s: float | None) -> str:
    """A Unix time as local wall-clock time to the second: ``2026-04-01 12:00:00``."""
    if not _known(unix_s):
        return NA
    assert unix_s is not None
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_s))
    except (OverflowError, OSError, ValueError):
        return NA


# --- GPU names --------------------------------------------------------------------------------

_VENDOR_WORDS = {"NVIDIA", "GEFORCE", "TESLA", "QUADRO"}
# Words after the model that name another model, with another price: form factor and bin.
_VARIANT_WORDS = {"NVL", "PCIE", "SXM", "SXM2", "SXM4", "SXM5", "TI", "SUPER", "ADA"}


def _without_vendor(name: str) -> list[str]:
    return [w for w in name.split() if w.upper() not in _VENDOR_WORDS]


def short_gpu_name(name: str) -> str:
    """The model and the words that name its variant: ``NVIDIA H100 80GB HBM3`` -> ``H100``;
    ``NVIDIA H200 NVL`` -> ``H200 NVL``; ``NVIDIA GeForce RTX 4090`` -> ``RTX 4090``."""
    words = _without_vendor(name)
    if not words:
        return name
    # the model ends at its first word with a digit: "H100", "RTX 4090", "RTX PRO 6000"
    end = next((i + 1 for i, w in enumerate(words[:3]) if any(c.isdigit() for c in w)), min(2, len(words)))
    return " ".join(words[:end] + [w for w in words[end:] if w.upper() in _VARIANT_WORDS])


def gpu_labels(names: Iterable[str]) -> dict[str, str]:
    """A label for each distinct GPU name of one host: its short name, unless another model
    there has the same one; then the name without vendor words (or, failing that, whole)."""
    distinct = set(names)
    shorts = Counter(short_gpu_name(n) for n in distinct)
    plains = Counter(" ".join(_without_vendor(n)) for n in distinct)
    labels = {}
    for name in distinct:
        short, plain = short_gpu_name(name), " ".join(_without_vendor(name))
        labels[name] = short if shorts[short] == 1 else plain if plain and plains[plain] == 1 else name
    return labels


def fmt_gpu_models(names: Iterable[str]) -> str:
    """A host's GPUs by model, one name per GPU: ``8× NVIDIA H200``, or ``3 GPUs: 2× H100, 1× L4``
    on a mixed host (most common first; two models never share a label), or ``no GPU``."""
    counts = Counter(names)
    if not counts:
        return "no GPU"
    if len(counts) == 1:
        name, count = next(iter(counts.items()))
        return f"{count}× {name}"
    labels = gpu_labels(counts)
    inner = ", ".join(f"{n}× {labels[name]}" for name, n in counts.most_common())
    return f"{sum(counts.values())} GPUs: {inner}"


# --- characters -------------------------------------------------------------------------------

# Every character beyond ASCII that tokentop draws, with the ASCII one that stands for it where
# the terminal cannot show Unicode (``--ascii``): one cell for one cell, so that nothing moves.
# The frames and bars Textual draws are here too. Any other character (a model name in another
# script, U+FFFD from ``tokentop.text``) becomes "?", one per cell (``to_ascii``).
ASCII_GLYPHS: dict[str, str] = {
    DASH: "-",  # nothing to show
    "…": "~",  # text cut short
    "·": "-",  # between the parts of a line; GPU·h
    "×": "x",  # 8× H200, ×PUE
    "●": "*",  # live
    "‖": "|",  # paused
    "⚠": "!",  # a warning
    "▲": "^",  # sorted lowest first; rows hidden above
    "▼": "v",  # sorted highest first; rows hidden below
    "↑": "^",  # the arrow keys
    "↓": "v",
    "°": " ",  # °C
    "└": "+",  # a MIG instance under its GPU; a frame's corner
    _FULL_BLOCK: "#",  # a full cell of a bar
    **dict.fromkeys(_PARTIAL_BLOCKS.strip() + "▐", "|"),  # the end of a bar; a notice's edge
    **dict.fromkeys("▁▂▃", "_"),  # the top of a graph's column, low to high
    **dict.fromkeys("▄▅▆▇", "="),
    **dict.fromkeys("─━═▀▔", "-"),  # frames and scroll bars
    **dict.fromkeys("│┃║", "|"),
    **dict.fromkeys("┌┐┘├┤┬┴┼╭╮╰╯", "+"),
    "\N{REPLACEMENT CHARACTER}": "?",
}
_ASCII_TABLE = str.maketrans(ASCII_GLYPHS)


def to_ascii(text: str) -> str:
    """``text`` in ASCII, cell for cell: glyphs as ``ASCII_GLYPHS`` says, anything else "?"."""
    if text.isascii():
        return text
    text = text.translate(_ASCII_TABLE)
    return text if text.isascii() else "".join(c if c.isascii() else _stand_in(c) for c in text)


def _stand_in(char: str) -> str:
    """A character ``ASCII_GLYPHS`` does not know: a letter without its accent (é: e), else "?",
    two for a wide one, none for one that takes no cell of its own (a combining mark)."""
    category = unicodedata.category(char)
    if unicodedata.combining(char) or category in ("Mn", "Me", "Cf"):
        return ""
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return "??"
    base = unicodedata.normalize("NFKD", char)[:1]
    return base if category.startswith("L") and base.isascii() and base.isalpha() else "?"
