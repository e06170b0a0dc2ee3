"""The fleet view's help screen: the messages of the moment, the keys (``keys.FLEET_KEYS``) and
the mouse, how to read the fleet's figures, and what each column of the hosts table and of an
opened host's tables means. Built with the local help screen's pieces; it scrolls like it."""

from __future__ import annotations

from tokentop.fleet.ssh import SERIES_KEEP_S
from tokentop.tui.columns import CostBands
from tokentop.tui.engine_table import ENGINE_COLUMNS
from tokentop.tui.fleet.host_table import HOST_COLUMNS
from tokentop.tui.gpu_table import GPU_COLUMNS
from tokentop.tui.keys import FLEET_KEYS, FLEET_MOUSE
from tokentop.tui.screens.help import HelpScreen, help_body, keys_tables, messages_section

NOTES = (
    (
        "$/Mtok",
        "effective $/Mtok, the header's first figure: everything the priced hosts' GPUs cost over the {cost} "
        "window, idle included, over their output tokens: summed cost over summed tokens, never an average of "
        "the hosts' ratios. busy $/Mtok: the cost of the busy seconds only",
    ),
    ("colours", "$/Mtok is {bands} (cost.usd_per_mtok_thresholds in the config)"),
    ("no price", "a host with a GPU that has no price is left out of both sides of the fleet's $/Mtok, and named"),
    (
        "windows",
        "tok/s and power: the {rate} rate window; $/Mtok and busy share: the {cost} cost window "
        "(prometheus.rate_window_s and cost_window_s; over ssh, the hosts' own rate_window_s and "
        "cost_window_s); '$/h now': the last readings",
    ),
    ("up", "the host's latest sample is fresh; the age is that of the sample, by this machine's clock"),
    ("STALE", "the latest sample is older than the source allows: its figures are kept, dimmed"),
    ("DOWN", "no reading can be had from the host; the reason is said beside it and in the message line"),
    ("clock", "the host's clock minus this one's, shown when more than 2 s apart"),
    ("stale figures", "when the source itself fails, the header says so and shows the last good figures, marked"),
    (
        "history",
        "the graph reads the source's past: 1 h, 24 h or 7 d (w); over ssh only the last "
        f"{SERIES_KEEP_S / 60:g} minutes are kept, in memory, and the title says 'all kept'; a source that "
        "keeps none says so",
    ),
)


def fleet_help_renderables(windows: dict[str, str], messages: tuple[str, ...], bands: CostBands) -> list[object]:
    keys = [(key.display, key.help) for key in FLEET_KEYS] + [("Esc", "Close this screen.")]
    return help_body(
        messages_section(messages, ()),
        keys_tables(keys, FLEET_MOUSE),
        NOTES,
        (
            ("Hosts table", HOST_COLUMNS),
            ("A host's GPU table (Enter)", GPU_COLUMNS),
            ("A host's engine table", ENGINE_COLUMNS),
        ),
        windows,
        bands,
    )


class FleetHelpScreen(HelpScreen):
    """The local help screen (its keys, frame and styles) with the fleet's content."""

    heading = "tokentop fleet help"

    def renderables(self) -> list[object]:
        return fleet_help_renderables(self.windows, self.messages, self.bands)
