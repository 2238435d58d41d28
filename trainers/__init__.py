"""Methods; importing this package registers every trainer."""

from trainers import biomedcoop, coop  # noqa: F401
