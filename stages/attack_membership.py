"""Stage attack_membership: LiRA membership inference on a classifier trained on the private (real) data
versus one trained on synthetic data made from it (Real-Fake Sec. 4.5, Fig. 3).

The train split is the private set. ``realfake.privacy.shadows`` experiments each take the half of it given
by the keep mask (pkeep 0.5, seed 0, as the released code): the *private* arm trains the classifier on that
half; the *synthetic* arm finetunes the ``full`` LoRA on that half only, synthesizes one img2img image per
member, and trains the classifier on those. Every experiment in turn is the target, the others its shadows.
Writes ``attack_membership.{json,md}`` in ``--out`` (``reports/realfake/``), the ROC curves and the per-image statistics.
"""

from __future__ import annotations

import numpy as np
import torch

from synthgap.data import load_processed
from synthgap.errors import run_main
from synthgap.metrics import predict_logits
from synthgap.noise import image_seeds
from synthgap.paths import atomic_save_npz, atomic_write_json, repo_root
from synthgap.realfake.finetune import train_unet
from synthgap.realfake.guidance import guidance_embeddings, image_embeddings
from synthgap.realfake.pipeline import finetune_settings, load_model, prompts_for, synthesis_spec, train_cell
from synthgap.realfake.privacy import auc, keep_mask, leave_one_out, logit_confidence, roc, tpr_at_fpr
from synthgap.realfake.report import roc_figure
from synthgap.realfake.synthesis import synthesize
from synthgap.runtime import resolve_device
from synthgap.seeding import derive_seed
from synthgap.tables import write_table
from synthgap.tracking import StageRun
from synthgap.train.classifier import to_device_tensors
from stages.common import realfake_params

STAGE = "attack_membership"


def main() -> None:
    params, paths = realfake_params(STAGE, "data", "stand-in", "out")
    cfg, privacy = params.section, params.section.privacy
    device = resolve_device(params.device)
    with StageRun(params, experiment="realfake") as run:
        data = load_processed(paths.data)
        h, _, c = data.image_shape
        x, y = to_device_tensors(data.x_train, data.y_train, device)
        prompts = prompts_for(cfg, data, repo_root())
        keep = keep_mask(privacy.shadows, len(y), seed=0)
        phi = {"private": np.zeros(keep.shape), "synthetic": np.zeros(keep.shape)}
        for k, members in enumerate(keep):
            idx = torch.from_numpy(np.flatnonzero(members)).to(device)
            with run.child(f"{STAGE}/shadow={k}", {"shadow": k, "n_members": int(members.sum())}) as child:
                seed = derive_seed(params.seed, STAGE, k)
                model = load_model(cfg, paths.stand_in, repo_root(), device)
                settings = finetune_settings(cfg, "full", steps=privacy.finetune_steps, device=device)
                tokens = guidance_embeddings(image_embeddings(model.image_encoder, x[idx]), y[idx], settings.guidance)
                member_prompts = [prompts[i] for i in idx.tolist()]
                projection, _ = train_unet(model, x[idx], member_prompts, tokens, settings, seed=seed, device=device,
                                           desc=f"{STAGE} lora {k}")
                seeds = image_seeds(seed, torch.arange(len(idx)), STAGE).tolist()
                fake = synthesize(model, synthesis_spec(cfg, "img2img", lora=True), member_prompts, seeds,
                                  sources=x[idx], tokens=tokens, projection=projection, out_channels=c, out_size=h,
                                  desc=f"{STAGE} synthesize {k}").to(device)
                for arm, (xa, ya) in {"private": (x[idx], y[idx]), "synthetic": (fake, y[idx])}.items():
                    model_k, _ = train_cell(cfg.classifier, xa, ya, data.num_classes, seed=derive_seed(seed, arm),
                                            device=device, evals={}, desc=f"{STAGE} {arm} {k}")
                    phi[arm][k] = logit_confidence(predict_logits(model_k, x), y)
                child.log_metrics({f"{arm}_mean_phi_in": float(phi[arm][k][members].mean()) for arm in phi}
                                  | {f"{arm}_mean_phi_out": float(phi[arm][k][~members].mean()) for arm in phi})
        rows, curves, metrics = [], {}, {}
        for arm, values in phi.items():
            curves[arm] = {}
            for attack, (scores, is_member) in leave_one_out(values, keep).items():
                curves[arm][attack] = roc(scores, is_member)
                row = {"training_data": arm, "attack": attack, "auc": auc(scores, is_member)}
                row |= {f"tpr_at_fpr_{f:g}": 100 * tpr_at_fpr(scores, is_member, f) for f in privacy.fpr}
                rows.append(row)
                metrics |= {f"{arm}_{attack}_{k}": v for k, v in row.items() if k not in ("training_data", "attack")}
        reports = paths.out
        write_table(rows, reports / STAGE, f"LiRA, {privacy.shadows} experiments (TPR in %; the smallest "
                    f"reachable FPR is 1/{int((~keep).sum())} non-member trials)")
        roc_figure(curves, reports / f"{STAGE}.png")
        atomic_save_npz(reports / f"{STAGE}_phi.npz", keep=keep, **{f"phi_{a}": v for a, v in phi.items()})
        atomic_write_json(reports / f"{STAGE}.json", {"rows": rows, "shadows": privacy.shadows})
        run.log_metrics(metrics)
        run.log_artifact(reports / f"{STAGE}.md")
        run.log_artifact(reports / f"{STAGE}.png")
        for row in rows:
            print(f"{STAGE}: {row['training_data']:9s} {row['attack']:14s} AUC {row['auc']:.3f}")


if __name__ == "__main__":
    run_main(main)
