"""Write the README's result tables from the files `dvc repro` wrote, so they can never drift from them.

    python scripts/readme_results.py          # rewrite the generated blocks of README.md
    python scripts/readme_results.py --check  # exit 1 if README.md differs from what reports/ say

Each block sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` in README.md and is
rebuilt from ``reports/`` alone: the GaFi tables, the Equivalence grid, the Real-Fake tables, the synthgap table and, for every
paired comparison in ``reports/summary.json``, one sentence that says what its verdict says and nothing more.
``tests/test_readme.py`` runs the check.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from synthgap.stats import estimate  # noqa: E402

BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.S)


def read(path: Path):
    return json.loads(path.read_text())


def table_file(path: Path) -> str:
    """A Markdown table the report stages wrote, without its title line."""
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines if line.startswith("|")) + "\n"


def headline_row(name: str, h: dict) -> str:
    ci = "-" if h["ci95"] is None else f"[{h['ci95'][0]:.2f}, {h['ci95'][1]:.2f}]"  # bootstrap intervals are not symmetric
    return f"| `{name}` | {h['mean']:.2f} | {ci} | {h['trials']} |\n"


def verdict_lines(comparisons: list[dict], paper: str) -> str:
    out = []
    for c in comparisons:
        if c["paper"] != paper:
            continue
        if c["verdict"] == "no_difference":
            ci = "" if c["ci95"] is None else f", 95 % CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]"
            out.append(f"- `{c['name']}`: no detectable difference ({c['diff_mean']:+.2f} points{ci})")
        else:
            out.append(f"- `{c['name']}`: **{c['verdict']}** by {c['diff_mean']:+.2f} points "
                       f"(95 % CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}])")
    return "\n".join(out) + "\n"


def equivalence_grid(root: Path, base_sizes: list[int]) -> str:
    lines = ["| n_base | setting | added | test top-1 (%) |", "|---|---|---|---|"]
    for n in base_sizes:
        for cell in read(root / "reports" / "equivalence" / "augment" / f"{n}.json")["cells"]:
            added = cell["n_real_added"] if cell["setting"] == "real" else cell["n_syn_added"]
            lines.append(f"| {n} | {cell['setting']} | {added} | {estimate(cell['accuracy_trials']).text(1)} |")
    return "\n".join(lines) + "\n"


def improvement_ratio(root: Path) -> str:
    """IR(n_base) per base size, from reports/equivalence/improvement_ratio.csv (ratios of trial means)."""
    import csv

    with (root / "reports" / "equivalence" / "improvement_ratio.csv").open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return "No IR: the run has no open-set cells (`equivalence.open_set.source: none`).\n"
    return "| n_base | ΔAcc closed (1:1) | ΔAcc open (1:1) | IR |\n|---|---|---|---|\n" + "".join(
        f"| {int(r['n_base'])} | {float(r['gain_closed']):+.1f} | {float(r['gain_open']):+.1f} | {float(r['ir']):.2f} |\n"
        for r in rows)


def runtime(root: Path) -> str:
    """The fresh-clone `dvc repro` time and the slowest stages, from benchmarks/results/repro-cpu.json."""
    r = read(root / "benchmarks" / "results" / "repro-cpu.json")
    ranked = sorted(r["stage_seconds"].items(), key=lambda kv: -kv[1])
    slowest = ", ".join(f"`{name}` {sec:.0f} s" for name, sec in ranked[:6])
    mode = r.get("mode", "")
    how = ("every stage rerun with `dvc repro --force`" if mode.startswith("in place") else
           "`dvc repro --force` on a fresh clone: every stage runs, as on a CPU other than the one that wrote `dvc.lock`"
           if mode.endswith("--force") else "`dvc repro` on a fresh clone")
    return (f"Measured with `{r['command']}` ({how}) on {r['device']}, {r['date'][:10]}, "
            f"commit {r['commit'][:8]}: **{r['total_s']:.0f} s** for all {r['stages']} stages "
            f"({'within' if r['within_budget'] else '**over**'} the budget of {r['budget_s']:.0f} s; "
            f"{r['stage_seconds_sum']:.0f} s inside the stages' MLflow runs, the rest is process start-up and DVC). "
            f"Slowest stages: {slowest}; all of them in `benchmarks/results/repro-cpu.json`."
            + (f" Speed probe (a fixed classifier workload, before / after): {probe[0]:.2f} s / {probe[1]:.2f} s."
               if (probe := r.get("speed_probe_s")) else "") + "\n")


def verdicts(root: Path, name: str = "verdicts") -> str:
    """Two runs' verdicts side by side (the same pipeline on two CPUs, or two settings of the embedded default on
    one), from benchmarks/results/<name>-cpu.json."""
    r = read(root / "benchmarks" / "results" / f"{name}-cpu.json")
    moved = "; ".join(f"`{c['name']}` {c['other']['verdict']} -> {c['here']['verdict']}" for c in r["changes"])
    changed = r.get("params_changed", [])
    what = ("with the same params and code run on" if not changed else
            f"with these params (changed: {', '.join(f'`{k}`' for k in changed)}) run on")
    return (f"`{r['command']}` ({r['date'][:10]}) compares the {r['comparisons']} comparisons of commit "
            f"{r['other_commit'][:8]}'s `dvc repro` on {r['other_device']} {what} "
            f"{r['device']}: **{r['flips']} flips** between `better` and `worse`; the {len(r['headline'])} headline "
            f"comparisons ({', '.join(f'`{n}`' for n in r['headline'])}) "
            + ("kept their verdicts" if not r["headline_changed"] else
               f"changed in {', '.join(f'`{n}`' for n in r['headline_changed'])}")
            + f"; {r['changed']} others moved between a direction and no detectable difference (an interval near 0 "
            f"in one of the two runs: {moved}).\n")


def launch_benchmark(root: Path) -> str:
    """A stage's start-up, forked from the launch server vs a process of its own: benchmarks/results/launch-cpu.json."""
    r = read(root / "benchmarks" / "results" / "launch-cpu.json")
    rows = "".join(f"| `{name}` | {v['inline_s']:.2f} s | {v['fork_s']:.2f} s |\n" for name, v in r["stages"].items())
    return (f"`{r['command']}` on {r['device']}, {r['date'][:10]} (median of {r['repeats']} runs each; the "
            f"server's own start, once per `dvc repro`: {r['cold_server_first_stage_s']:.1f} s for the first stage):\n\n"
            "| stage | own process | forked |\n|---|---|---|\n" + rows
            + f"| mean | {r['inline_mean_s']:.2f} s | {r['fork_mean_s']:.2f} s ({r['ratio']:.1f}x) |\n")


def stacked(root: Path) -> str:
    r = read(root / "benchmarks" / "results" / "stacked-cpu.json")
    rows = [f"| {name} | {v['k']} | {v['images']} x {v['epochs']} epochs | {v['stacked_s']:.1f} s | {v['sequential_s']:.1f} s | "
            f"**{v['ratio']:.2f}x** |" for name, v in r["shapes"].items()]
    return (f"`{r['command']}` on {r['device']}, {r['date'][:10]} (goal: {r['goal']}):\n\n"
            "| shape | k | data | stacked | sequential | ratio |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def cpu_benchmarks(root: Path) -> str:
    """The Performance table, from benchmarks/results/{classifier,recycle,sampling}-cpu.json."""
    c, r, g = (read(root / "benchmarks" / "results" / f"{name}-cpu.json") for name in ("classifier", "recycle", "sampling"))
    gan_batch = max(g["img_per_s"]["gan"], key=lambda b: g["img_per_s"]["gan"][b])
    return (f"Measured on {c['device']} ({c['date'][:10]}; no GPU was lent to this task, so the GPU targets are not "
            "measured yet):\n\n| benchmark (command) | ours | baseline | ratio |\n|---|---|---|---|\n"
            f"| ResNet-20 w64 training, 32x32, batch {c['batch_size']} (`{c['command']}`) | {c['ours_img_per_s']:.1f} img/s "
            f"(`precision: bf16`) | {c['baseline_img_per_s']:.1f} img/s | **{c['ours_img_per_s'] / c['baseline_img_per_s']:.1f}x** |\n"
            f"| same, `precision: fp32` (the CPU default `auto`) | {c['ours_fp32_img_per_s']:.1f} img/s | "
            f"{c['baseline_img_per_s']:.1f} img/s | {c['ours_fp32_img_per_s'] / c['baseline_img_per_s']:.2f}x |\n"
            f"| accurate pipeline, embedded networks, {r['images_per_epoch']:,} images (`{r['command']}`) | "
            f"{r['seconds_per_epoch']:.2f} s/epoch (generate + filter + train) | | |\n"
            f"| GAN sampling, embedded generator (`{g['command']}`) | {g['img_per_s']['gan'][gan_batch]:.1f} img/s "
            f"(batch {gan_batch}) | | |\n")


def cpu_profile(root: Path) -> str:
    """What the classifier benchmark's profile and peak fractions say, from benchmarks/results/classifier-cpu.json."""
    c = read(root / "benchmarks" / "results" / "classifier-cpu.json")
    share = lambda word: 100 * sum(r["share"] for r in c["profile_ours"] if word in r["op"])  # noqa: E731
    peak, hours = c["fraction_of_peak"], c["projected_s_100_epochs_50k"]
    return (f"On this CPU compute dominates both loops (in the bf16 profile, convolution forward/backward take "
            f"{share('convolution'):.0f} % of the time and BatchNorm {share('batch_norm'):.0f} %, the rest is elementwise), "
            f"so keeping data on the device buys little in fp32 ({c['ours_fp32_img_per_s'] / c['baseline_img_per_s']:.2f}x: "
            f"the loop itself is as fast as the baseline's compute, {100 * peak['ours_fp32']:.0f} % vs "
            f"{100 * peak['baseline_fp32']:.0f} % of the measured fp32 matmul peak), and the gain comes from bf16 on AMX "
            f"with channels-last ({c['ours_img_per_s'] / c['baseline_img_per_s']:.1f}x, {100 * peak['ours_bf16']:.0f} % of "
            "the measured bf16 peak). `auto` stays fp32 on the CPU so that embedded results do not depend on the CPU "
            "model; set `precision: bf16` in a classifier's `train` section to use it. The 100-epoch projection on "
            f"50,000 images is {hours['ours'] / 3600:.1f} h (ours, bf16) against {hours['baseline'] / 3600:.1f} h "
            "(baseline) on this CPU.\n")


def privacy(root: Path) -> str:
    copies = read(root / "reports" / "realfake" / "detect_copies.json")
    attack = read(root / "reports" / "realfake" / "attack_membership.json")

    def reading(row: dict) -> str:
        low, high = row["auc_ci95"]
        return f"{row['attack'].replace('_', ' ')} {row['auc']:.3f} [{low:.3f}, {high:.3f}]" + (" **above 0.5**" if low > 0.5 else "")

    arms = dict.fromkeys(r["training_data"] for r in attack["rows"])
    per_arm = [f"`{arm}`: " + ", ".join(reading(r) for r in attack["rows"] if r["training_data"] == arm) for arm in arms]
    return (table_file(root / "reports" / "realfake" / "attack_membership.md")
            + "\nLiRA AUC with 95 % intervals (private images resampled; an interval above 0.5 is leakage the attack "
            "detects): " + "; ".join(per_arm) + ".\n"
            + f"\nCopy detection ({copies['features']} features): the median nearest-training-image similarity is "
            f"{copies['synthetic_top1_sim_q0.5']:.3f} for synthetic images and {copies['test_top1_sim_q0.5']:.3f} for held-out "
            f"real test images; {100 * copies['synthetic_above_test_max']:.1f} % of synthetic images are closer to a training "
            f"image than the closest real test image is (`reports/realfake/detect_copies.png`).\n")


def stand_in(root: Path) -> str:
    """The Real-Fake stand-in's domain gap: its pretraining corpus against the real training digits."""
    m = read(root / "reports" / "metrics" / "pretrain_base_model.json")
    return (f"Domain gap of the pretrained stand-in (`reports/metrics/pretrain_base_model.json`): its CLIP reads "
            f"{100 * m['clip_zero_shot_corpus']:.1f} % of its own {m['corpus_images']:,.0f}-image font corpus zero-shot "
            f"(\"photo of digit seven\" against the other nine prompts) and {100 * m['clip_zero_shot_real']:.1f} % of "
            f"the real training digits; its VAE reconstructs the corpus with a mean squared error of "
            f"{m['vae_error_corpus']:.3f} and the real digits with {m['vae_error_real']:.3f} (pixels in [-1, 1]).\n")


def blocks(root: Path) -> dict[str, str]:
    summary = read(root / "reports" / "summary.json")
    comparisons = summary["comparisons"]
    head = summary["headline"]
    eq = read(root / "reports" / "equivalence" / "equivalence.json")
    bases = sorted(int(p.stem) for p in (root / "reports" / "equivalence" / "augment").glob("*.json"))
    eq_lines = []
    for setting, fit in eq.items():
        ci = (f" (95 % bootstrap intervals: c1 [{fit['c1_ci95'][0]:.2f}, {fit['c1_ci95'][1]:.2f}], "
              f"c2 [{fit['c2_ci95'][0]:.2f}, {fit['c2_ci95'][1]:.2f}])") if fit.get("c1_ci95") else ""
        eq_lines.append(f"- {setting}: c1 = {fit['c1']:.2f}, c2 = {fit['c2']:.2f}, R² {fit['r2']:.2f}{ci}")
    return {
        "headline": "| headline | mean | 95 % interval | trials |\n|---|---|---|---|\n" + "".join(
            headline_row(name, h) for name, h in head.items()),
        "gafi_tables": "".join(f"{table_file(root / 'reports' / 'gafi' / f'table{i}.md')}\n" for i in (1, 2, 3, 4)),
        "gafi_verdicts": verdict_lines(comparisons, "gafi"),
        "equivalence_grid": equivalence_grid(root, bases),
        "equivalence_fit": "\n".join(eq_lines) + "\n",
        "equivalence_verdicts": verdict_lines(comparisons, "equivalence"),
        "equivalence_ir": improvement_ratio(root),
        "realfake_stand_in": stand_in(root),
        "realfake_tables": "".join(f"{table_file(root / 'reports' / 'realfake' / f'table{i}.md')}\n" for i in (1, 2, 3)),
        "realfake_verdicts": verdict_lines(comparisons, "realfake"),
        "synthgap_table": table_file(root / "reports" / "synthgap" / "table.md"),
        "synthgap_verdicts": verdict_lines(comparisons, "synthgap"),
        "runtime": runtime(root),
        "verdicts": verdicts(root),
        "recipe_verdicts": verdicts(root, "verdicts-recipe"),
        "launch_benchmark": launch_benchmark(root),
        "privacy": privacy(root),
        "stacked_benchmark": stacked(root),
        "cpu_benchmarks": cpu_benchmarks(root),
        "cpu_profile": cpu_profile(root),
    }


def render(readme: str, root: Path) -> str:
    made = blocks(root)

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in made:
            raise SystemExit(f"readme_results: error: README block '{name}' has no generator; known: {', '.join(made)}")
        return match.group(1) + made[name] + match.group(4)

    return BLOCK.sub(replace, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is not what reports/ say")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    path = args.root / "README.md"
    current = path.read_text()
    wanted = render(current, args.root)
    if args.check:
        if wanted != current:
            sys.exit("readme_results: README.md differs from reports/; run `python scripts/readme_results.py`")
        print("README.md matches reports/")
        return
    path.write_text(wanted)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
