"""benchmarks.verdicts: which comparisons changed verdict between two machines' runs, and which of those flipped."""

from __future__ import annotations

from benchmarks.verdicts import verdict_changes


def comparison(name: str, verdict: str, diff: float) -> dict:
    return {"name": name, "paper": "gafi", "verdict": verdict, "diff_mean": diff, "ci95": [diff - 1, diff + 1],
            "trials": 3}


def test_a_flip_is_better_to_worse_and_a_move_to_no_difference_is_not():
    other = [comparison("a", "better", 5.0), comparison("b", "better", 2.0), comparison("c", "worse", -3.0),
             comparison("d", "no_difference", 0.5), comparison("only_there", "better", 1.0)]
    here = [comparison("a", "better", 4.0), comparison("b", "worse", -2.0), comparison("c", "no_difference", -0.5),
            comparison("d", "no_difference", 0.1), comparison("only_here", "worse", -1.0)]
    changes, unmatched = verdict_changes(other, here)
    assert [(c["name"], c["flip"]) for c in changes] == [("b", True), ("c", False)]  # a, d kept their verdicts
    assert changes[0]["other"] == {"verdict": "better", "diff_mean": 2.0, "ci95": [1.0, 3.0]}
    assert changes[0]["here"]["verdict"] == "worse"
    assert unmatched == ["only_here", "only_there"]


def test_params_are_compared_by_dotted_key():
    from benchmarks.verdicts import params_changed

    before = {"trials": 3, "gafi": {"cas": {"train": {"epochs": 10, "milestones": [6, 8]}}, "seed": 0}}
    now = {"trials": 3, "gafi": {"cas": {"train": {"epochs": 8, "milestones": [6, 8]}}}}
    assert params_changed(before, now) == ["gafi.cas.train.epochs", "gafi.seed"]
    assert params_changed(before, before) == []
