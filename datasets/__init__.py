"""Dataset readers; importing this package registers every one of them."""

from datasets import benchmarks, own  # noqa: F401  (the 11 benchmarks; any other NAME reads the user's split)
from datasets.benchmarks import BENCHMARKS, spec_for

__all__ = ["BENCHMARKS", "spec_for"]
