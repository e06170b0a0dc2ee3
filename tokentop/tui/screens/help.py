"""The help screen: keys (from ``keys.KEYS``), what each column means, and current messages."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tokentop.tui.columns import ColumnSpec
from tokentop.tui.engine_table import ENGINE_COLUMNS
from tokentop.tui.gpu_table import GPU_COLUMNS
from tokentop.tui.keys import KEYS

NOTES = (
    ("N/A", "not known: unsupported, failed this tick, or not published by that server"),
    ("idle", "the engine delivered no tokens in the window, so there is no $/Mtok"),
    ("—", "nothing to show: the GPU serves no engine"),
    (
        "$/Mtok",
        "effective cost: everything the GPUs cost over the window, idle time included, per million output tokens",
    ),
    (
        "windows",
        "'now' is the last reading; '{rate}' and '{cost}' are the rate and cost windows "
        "(rate_window_s and cost_window_s in the config)",
    ),
)


def _columns_table(title: str, specs: tuple[ColumnSpec, ...], windows: dict[str, str]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 1), expand=True)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(ratio=1)
    for spec in specs:
        header = f"{spec.title} {spec.window.format(**windows)}".strip()
        table.add_row(header, spec.help)
    return table


def help_renderables(windows: dict[str, str], messages: tuple[str, ...], log: tuple[str, ...] = ()) -> list[object]:
    keys = Table(title="Keys", title_justify="left", show_header=False, box=None, padding=(0, 1), expand=True)
    keys.add_column(style="bold", no_wrap=True)
    keys.add_column(ratio=1)
    for key in KEYS:
        keys.add_row(key.display, key.help)
    keys.add_row("Esc", "Close this screen (or the details).")
    notes = Table(
        title="Reading the figures", title_justify="left", show_header=False, box=None, padding=(0, 1), expand=True
    )
    notes.add_column(style="bold", no_wrap=True)
    notes.add_column(ratio=1)
    for word, meaning in NOTES:
        notes.add_row(word, meaning.format(**windows))
    parts: list[object] = []  # what is wrong now comes first
    if messages:
        parts += [Text("Messages now", style="bold")] + [Text(f"⚠ {m}") for m in messages] + [Text("")]
    if log:
        parts += [Text("Recent log", style="bold")] + [Text(line) for line in log] + [Text("")]
    parts += [
        keys,
        Text(""),
        notes,
        Text(""),
        _columns_table("GPU table", GPU_COLUMNS, windows),
        Text(""),
        _columns_table("Engine table", ENGINE_COLUMNS, windows),
    ]
    return parts


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark", "close", "close", show=True, key_display="Esc"),
    ]

    def __init__(self, windows: dict[str, str], messages: tuple[str, ...], log: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.windows = windows
        self.messages = messages
        self.log_lines = log

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-body") as body:
            body.border_title = "tokentop help"
            body.border_subtitle = "Esc or ? closes"
            for renderable in help_renderables(self.windows, self.messages, self.log_lines):
                yield Static(renderable)  # type: ignore[arg-type]

    def action_close(self) -> None:
        self.dismiss()
