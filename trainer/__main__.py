"""`python -m trainbench.trainer` (and `trainbench bench`): bench mode. See bench.py."""

from __future__ import annotations

import sys

from trainbench.trainer.bench import main

if __name__ == "__main__":
    sys.exit(main())
