"""Presentation: the one `finalize` pipeline (finalize.py), the markdown report (markdown.py, with the
per-type sections in sections.py) and the trend plots (plots.py)."""
