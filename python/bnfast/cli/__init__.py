"""The command line of bnfast (``python -m bnfast``) and its benchmark harness.

It depends on the library, never the reverse: nothing in ``bnfast`` outside
this package imports it.

- :mod:`~bnfast.cli.app`: :func:`main`, errors and signals -> exit codes
- :mod:`~bnfast.cli.args`: the argument parser and the checks of its values
- :mod:`~bnfast.cli.commands`: ``stats``, ``normalize``, ``diagnose``
- :mod:`~bnfast.cli.datafiles`: chunked .npy/.npz reading, atomic .npy writing
- :mod:`~bnfast.cli.progress`: the progress bar
- :mod:`~bnfast.cli.bench`: ``bench`` and the benchmark case registry
"""

from .app import main, main_diagnose, main_normalize, main_stats

__all__ = ["main", "main_diagnose", "main_normalize", "main_stats"]
