"""``python -m bnfast bench``: a self-check, then every benchmark case timed
beside its baselines (see :mod:`.harness`)."""

from .harness import run

__all__ = ["run"]
