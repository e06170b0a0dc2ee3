"""What every screen over the live view shares: Esc closes it, and q still quits.

A modal screen stops the app's own bindings, so a screen that wants ``q`` to quit says so.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.screen import ModalScreen


class Overlay(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close", key_display="Esc"),
        Binding("q", "app.quit", "quit"),
    ]

    def action_close(self) -> None:
        self.dismiss()
