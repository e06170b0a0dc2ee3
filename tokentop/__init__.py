"""tokentop: what a delivered token costs, live, per GPU."""

__version__ = "0.1.0"
