"""Stage prepare_data: load the raw dataset, split train/validation.

Reads ``data.path`` or the download in ``--raw``/<name>; writes ``--out`` (``data/processed/``: ``dataset.npz``, ``info.json``) (see ``synthgap.data.processed``).
"""

from __future__ import annotations

from synthgap.config import load_stage_params
from synthgap.data import load_dataset, save_processed
from synthgap.data.processed import build_processed
from synthgap.data.sources import raw_path
from synthgap.errors import run_main
from synthgap.paths import repo_root, workspace_root
from synthgap.tracking import StageRun
from stages.common import stage_paths

STAGE = "prepare_data"


def main() -> None:
    workspace = workspace_root()
    params = load_stage_params(STAGE, workspace / "params.yaml")
    paths = stage_paths(STAGE, "raw", "out")
    cfg = params.section
    with StageRun(params, experiment="common") as run:
        # data/raw is in the repository root, also for a queued experiment running in a copy of it
        source = raw_path(params.data.name, params.data.path, repo_root(), repo_root() / paths.raw.relative_to(workspace))
        dataset = load_dataset(params.data.name, source, params.data.download, params.data.image_size)
        data = build_processed(dataset, cfg.val_size, cfg.split_seed)
        out = paths.out
        save_processed(data, out)
        info = data.info()
        run.log_metrics({f"n_{split}": n for split, n in info["sizes"].items()} | {"num_classes": data.num_classes})
        run.log_artifact(out / "info.json")
        print(f"{STAGE}: {data.name} {info['image_shape']} sizes {info['sizes']}")


if __name__ == "__main__":
    run_main(main)
