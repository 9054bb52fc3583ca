"""Write generated files, or with --check report those whose content on disk differs (the hack/ scripts)."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(files: dict[Path, str], argv: list[str], script: str) -> int:
    """Write every file; with `--check` in argv write nothing and return 1 when any file is missing or stale."""
    if "--check" not in argv:
        for path, text in files.items():
            path.write_text(text)
        return 0
    stale = [path.name for path, text in files.items() if not path.exists() or path.read_text() != text]
    if stale:
        print(f"out of date: {', '.join(stale)}; run python {script}", file=sys.stderr)
        return 1
    return 0
