"""Confirmation beside the baseline's image, the pure parts: plan.with_repeats alternates the confirming re-runs
with runs of the baseline's image; those runs are kept in the case's repeats but never its value; the baseline
they form replaces the stored one for that case (results/baseline.same_window), or the stored one stays with a
note when none of them ran."""

from __future__ import annotations

from trainbench.operator.api import parse_spec
from trainbench.operator.plan import plan, with_repeats
from trainbench.operator.results import baseline as B
from trainbench.operator.results.repeats import group_outcomes, merge, samples

SPEC = {
    "pools": [{"name": "cpu", "image": "trainer:new"}],
    "matrix": {"models": ["tiny-qwen3"], "seqLens": [128, 256]},
    "steps": 2,
}


def test_with_repeats_alternates_confirm_and_baseline_image_runs():
    a, b = plan(parse_spec(SPEC))
    units = with_repeats([a, b], 1, confirm={a.id: 2}, baseline_images={a.id: "trainer:old"})
    assert [(u.id.removeprefix(a.id), u.confirm, u.baseline, u.image) for u in units if u.base_id == a.id] == [
        ("", False, False, "trainer:new"),
        ("-r2", True, False, "trainer:new"),
        ("-b1", False, True, "trainer:old"),
        ("-r3", True, False, "trainer:new"),
        ("-b2", False, True, "trainer:old"),
    ]
    assert [u.id for u in with_repeats([a, b], 1, confirm={a.id: 1})] == [a.id, b.id, f"{a.id}-r2"]


def _outcome(tps: float, phase: str = "Succeeded", reason: str | None = None) -> dict:
    return {"phase": phase, "reason": reason, "metrics": {"tps": {"mean": tps, "std": 1.0, "n": 3}}}


def test_baseline_image_runs_are_kept_but_never_the_case_value():
    a = plan(parse_spec(SPEC))[0]
    units = with_repeats([a], 1, confirm={a.id: 1}, baseline_images={a.id: "trainer:old"})
    outs = {units[0].id: _outcome(50.0), units[1].id: _outcome(52.0)}
    outs[units[2].id] = _outcome(0.0, "Failed", "ImagePullBackOff")
    grouped = group_outcomes(units, outs)[a.id]["repeats"]
    assert [o.get("baseline_image") for o in grouped] == [None, None, "trainer:old"]
    primary, combined, entries = merge(grouped, lambda o: o["metrics"])
    assert primary["phase"] == "Succeeded"  # a failed baseline-image run does not fail the case
    assert combined["tps"]["mean"] == 51.0 and entries[2]["baseline_image"] == "trainer:old"
    case = {"repeats": entries}
    assert [s["mean"] for s in samples(case, "tps")] == [52.0]  # the confirming re-run alone


def _results(image_reps: list[dict]) -> dict:
    case = {"id": "c1", "model": "tiny-qwen3", "type": "sft-full", "seq_len": 128, "ac": "recompute", "attn": "auto"}
    case |= {"ep": 1, "cp": 1, "hardware": "CPU", "phase": "Succeeded", "image": "trainer:new"}
    case["metrics"] = {"tps": {"mean": 50.0, "std": 1.0, "n": 3}}
    reps = [
        {"repeat": 1, "confirm": False, "phase": "Succeeded", "metrics": {"tps": {"mean": 50.0, "std": 1.0, "n": 3}}}
    ]
    reps += [{"repeat": 2 + i, "confirm": False, **r} for i, r in enumerate(image_reps)]
    return {"run": "r9", "environment": {}, "cases": [{**case, "repeats": reps}]}


def _stored(results: dict, image: str | None) -> B.Baseline:
    base = B.Baseline("results", "run golden")
    entry = {"source": "results", "run": "golden", "metrics": {"tps": {"mean": 5000.0}}, "image": image}
    base.add(results["cases"][0], entry)
    return base


def test_baseline_images_only_where_known_and_different():
    doc = _results([])
    assert B.baseline_images(_stored(doc, "trainer:old"), doc, ["c1"]) == ({"c1": "trainer:old"}, {})
    assert B.baseline_images(_stored(doc, None), doc, ["c1"])[1] == {"c1": "the baseline's image is not known"}
    assert B.baseline_images(_stored(doc, "trainer:new"), doc, ["c1"])[1] == {"c1": "the baseline ran the same image"}
    assert B.baseline_images(_stored(doc, "trainer:old"), doc, []) == ({}, {})


def test_same_window_baseline_or_a_note_why_not():
    ran = [
        {"phase": "Succeeded", "baseline_image": "trainer:old", "metrics": {"tps": {"mean": m, "std": 1.0, "n": 3}}}
        for m in (49.0, 51.0)
    ]
    doc = _results(ran)
    judged = B.same_window(_stored(doc, "trainer:old"), doc)
    entry = judged.find(doc["cases"][0])
    assert entry["source"] == "same-window" and [s["mean"] for s in entry["samples"]["tps"]] == [49.0, 51.0]
    assert entry["metrics"]["tps"]["mean"] == 50.0 and "judged against their baseline's image" in judged.description
    gone = [{"phase": "Failed", "reason": "ImagePullBackOff", "baseline_image": "trainer:old", "metrics": None}] * 2
    doc = _results(gone)
    entry = B.same_window(_stored(doc, "trainer:old"), doc).find(doc["cases"][0])
    assert entry["source"] == "results" and entry["note"].endswith(
        "(ImagePullBackOff): re-runs compared with the stored baseline"
    )
    assert B.same_window(None, doc) is None
