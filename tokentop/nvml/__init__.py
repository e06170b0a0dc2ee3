"""GPUs through NVML: the only package that imports ``pynvml``.

``NvmlReader`` is the real thing; ``tokentop.nvml.fake.FakeNvml`` stands in for the ``pynvml``
module underneath it in tests and in the demo.
"""

from tokentop.nvml.reader import NvmlReader

__all__ = ["NvmlReader"]
