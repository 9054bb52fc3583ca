"""Change-point detection over a suite's history with Apache Otava (operator/results/changepoints.py)."""

import random

from trainbench.operator.results.changepoints import detect, unacknowledged


def _history(values, case="c1", metric="tps", tainted_at=()):
    runs = []
    for i, v in enumerate(values):
        case_doc = {"id": case, "phase": "Succeeded", "metrics": {metric: {"mean": v, "std": 0.0, "n": 5}}}
        if i in tainted_at:
            case_doc["tainted"] = ["host load"]
        runs.append({"run": f"r{i:02d}", "commit": f"c{i:02d}", "image": f"img@sha256:{i:02d}", "cases": [case_doc]})
    return {"schema": "trainbench.dev/history/v1", "suite": "s", "runs": runs}


def test_finds_a_planted_step_change_and_names_the_run():
    rng = random.Random(1)
    values = [1000 + rng.gauss(0, 15) for _ in range(15)] + [850 + rng.gauss(0, 15) for _ in range(10)]
    points = detect(_history(values))
    assert len(points) == 1
    p = points[0]
    assert (p.case, p.metric, p.run, p.commit) == ("c1", "tps", "r15", "c15")
    assert p.image == "img@sha256:15"
    assert -18 < p.change_pct < -12
    assert not p.acknowledged


def test_flat_noise_has_no_change_point():
    for seed in range(5):
        rng = random.Random(seed)
        assert detect(_history([1000 + rng.gauss(0, 30) for _ in range(30)])) == []


def test_ack_suppresses_a_known_change_point():
    rng = random.Random(1)
    values = [1000 + rng.gauss(0, 15) for _ in range(15)] + [850 + rng.gauss(0, 15) for _ in range(10)]
    points = detect(_history(values), acks=[{"case": "c1", "metric": "tps", "run": "r15", "note": "new kernel"}])
    assert len(points) == 1 and points[0].acknowledged
    assert unacknowledged(points) == []
    # an ack of another run does not
    assert unacknowledged(detect(_history(values), acks=[{"case": "c1", "metric": "tps", "run": "r03"}]))


def test_tainted_runs_and_short_histories_are_left_out():
    values = [1000.0] * 4 + [10.0] + [1000.0] * 4
    assert detect(_history(values, tainted_at={4})) == []
    assert detect(_history([1000.0, 500.0])) == []
