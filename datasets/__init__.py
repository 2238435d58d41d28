"""Dataset readers; importing this package registers every one of them."""

from datasets import benchmarks  # noqa: F401  (registers the 11 benchmarks)
from datasets.benchmarks import BENCHMARKS, spec_for

__all__ = ["BENCHMARKS", "spec_for"]
