"""The results of a run and what they are judged against: the results document (document.py), the case key
and labels (keys.py), baselines (baseline.py), the suite's history (history.py) and verdicts (verdict.py)."""
