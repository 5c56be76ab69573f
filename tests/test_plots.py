"""What DVC users look at first: the top-level plots in dvc.yaml render (`dvc plots show` finds every
declared file, and each data plot draws the fields it names; a misspelt or missing column would give an empty
chart, not an error), and `dvc metrics show` fits a 200-column terminal."""

from __future__ import annotations

import json
import subprocess

import yaml

from tests.conftest import REPO


def test_every_top_level_plot_renders_its_fields():
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    proc = subprocess.run(["dvc", "plots", "show", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)["data"]
    for entry in declared:
        path, spec = (next(iter(entry.items())) if isinstance(entry, dict) else (entry, {}))
        files = [name for name in shown if name == path or name.startswith(path.rstrip("/") + "/")]
        assert files, f"dvc plots show draws nothing for {path}"
        if "y" not in spec:
            continue
        fields = [spec["y"]] if isinstance(spec["y"], str) else spec["y"]
        for name in files:
            if not name.endswith(".csv"):
                continue
            (plot,) = shown[name]
            rows = plot["content"]["data"]["values"]
            missing = sorted({f for f in [spec["x"], *fields] for row in rows if f not in row})
            assert rows and not missing, f"{name}: no column {missing} to draw (dvc.yaml names x {spec['x']}, y {fields})"


def test_dvc_metrics_show_is_the_headline_and_fits_a_terminal():
    proc = subprocess.run(["dvc", "metrics", "show"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["reports/headline.json"], proc.stdout
    header = lines[0].split()
    assert {"gafi.real", "gafi.gafi", "equiv.c1", "realfake.syn", "verdict.no_diff"} <= set(header), header
    assert max(map(len, lines)) <= 200, proc.stdout
