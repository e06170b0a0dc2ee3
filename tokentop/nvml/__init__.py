"""GPUs through NVML: the only package that imports ``pynvml``.

``NvmlReader`` is the real thing; ``tokentop.nvml.fake.FakeNvml`` stands in for the ``pynvml``
module underneath it in tests and in the demo.

``reader.py``: the reader (open, read each tick, close); ``calls.py``: the one choke point every
call goes through and what each error code means; ``power.py``: power, limit and energy in one
field-values call; ``direct.py``: utilisation, memory, temperature and clock straight through
NVML's C functions; ``processes.py``: process lists; ``mig.py``: MIG instances.
"""

from tokentop.nvml.reader import NvmlReader

__all__ = ["NvmlReader"]
