"""The fleet: many hosts in one view, read from a Prometheus or over ssh (headless, no Textual)."""
