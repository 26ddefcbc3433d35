"""``python -m bnfast``: see :mod:`bnfast.cli`."""

from bnfast.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
