"""The help screen: the messages and faults of the moment first, then the keys (from
``keys.KEYS``) and the mouse, how to read the figures, and what each column means. It scrolls
(↑↓, PgUp/PgDn, Home/End, the wheel) and fits an 80x24 terminal."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from tokentop.tui.columns import DEFAULT_BANDS, ColumnSpec, CostBands
from tokentop.tui.engine_table import ENGINE_COLUMNS
from tokentop.tui.gpu_table import GPU_COLUMNS
from tokentop.tui.keys import KEYS, MOUSE, OVERLAY_KEYS
from tokentop.tui.screens.overlay import Overlay

NOTES = (
    (
        "$/Mtok",
        "effective $/Mtok, the header's first figure: everything the GPUs cost over the {cost} window, idle "
        "time included, per million output tokens. busy $/Mtok: the cost of the busy seconds only",
    ),
    ("colours", "$/Mtok is {bands} (cost.usd_per_mtok_thresholds in the config)"),
    ("idle", "the window is full and no token flowed in it: there is no $/Mtok"),
    (
        "warming",
        "the window is still filling (the session is younger than it) and no token flowed yet; "
        "meanwhile headers show the span a window covers (12s rather than 1m)",
    ),
    ("—", "the GPU serves no engine: nothing to divide its cost by (engine and $/Mtok columns)"),
    ("N/A", "not known: unsupported, failed this tick, or not published by that server"),
    ("util", "NVML's utilisation: the share of time a kernel ran on the GPU"),
    ("busy", "the busy share: the share of the window in which tokens flowed or requests ran on the GPU's engine"),
    (
        "windows",
        "'now' is the last reading; '{rate}' and '{cost}' are the rate and cost windows "
        "(rate_window_s and cost_window_s in the config)",
    ),
)


def two_columns(title: str) -> Table:
    """A titled table of a bold term and its meaning (both help screens' tables)."""
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1), expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    return table


def columns_table(title: str, specs: tuple[ColumnSpec, ...], windows: dict[str, str]) -> Table:
    """What each column of a table means, under its header as drawn (its window named)."""
    table = two_columns(title)
    for spec in specs:
        header = f"{spec.title} {spec.window.format(**windows)}".strip()
        table.add_row(header, spec.help)
    return table


def keys_tables(keys: Iterable[tuple[str, str]], mouse: Iterable[tuple[str, str]]) -> list[object]:
    """The keys and the mouse, each ``(what, meaning)``."""
    tables = []
    for title, rows in (("Keys", keys), ("Mouse", mouse)):
        table = two_columns(title)
        for what, meaning in rows:
            table.add_row(what, meaning)
        tables.append(table)
    return [tables[0], Text(""), tables[1]]


def messages_section(messages: tuple[str, ...], log: tuple[str, ...]) -> list[object]:
    """What is wrong now (GPUs lost, endpoints down, history failures, warnings), always shown."""
    parts: list[object] = [Text("Messages", style="bold")]
    if messages:
        parts += [Text(f"⚠ {m}") for m in messages]
    else:
        parts.append(Text("none now: every GPU and endpoint answers and nothing was logged", style="italic"))
    if log:
        parts += [Text(""), Text("Recent log", style="bold")] + [Text(line) for line in log]
    return parts + [Text("")]


def help_body(
    messages: list[object],
    keys: list[object],
    notes: Iterable[tuple[str, str]],
    tables: Iterable[tuple[str, tuple[ColumnSpec, ...]]],
    windows: dict[str, str],
    bands: CostBands,
) -> list[object]:
    """A help screen's content in its order: the messages, the keys, how to read the figures
    (``notes``: a word and its meaning, ``{rate}``, ``{cost}`` and ``{bands}`` filled in), and
    what each column of each table means."""
    notes_table = two_columns("Reading the figures")
    for word, meaning in notes:
        notes_table.add_row(word, meaning.format(bands=bands.describe(), **windows))
    body = [*messages, *keys, Text(""), notes_table]
    for title, specs in tables:
        body += [Text(""), columns_table(title, specs, windows)]
    return body


def help_renderables(
    windows: dict[str, str], messages: tuple[str, ...], log: tuple[str, ...] = (), bands: CostBands = DEFAULT_BANDS
) -> list[object]:
    keys = [(key.display, key.help) for key in KEYS] + list(OVERLAY_KEYS)
    return help_body(
        messages_section(messages, log),
        keys_tables(keys, MOUSE),
        NOTES,
        (("GPU table", GPU_COLUMNS), ("Engine table", ENGINE_COLUMNS)),
        windows,
        bands,
    )


class HelpScreen(Overlay):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("question_mark", "close", "close", key_display="?")]

    def __init__(
        self,
        windows: dict[str, str],
        messages: tuple[str, ...],
        log: tuple[str, ...] = (),
        bands: CostBands = DEFAULT_BANDS,
    ) -> None:
        super().__init__()
        self.windows = windows
        self.messages = messages
        self.log_lines = log
        self.bands = bands

    heading: ClassVar[str] = "tokentop help"

    def renderables(self) -> list[object]:
        return help_renderables(self.windows, self.messages, self.log_lines, self.bands)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = self.heading
            body.border_subtitle = "↑↓ PgUp PgDn scroll · Esc or ? closes · q quits"
            for renderable in self.renderables():
                yield Static(renderable)  # type: ignore[arg-type]

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()  # the scroll keys go to the text
