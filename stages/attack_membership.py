"""Stage attack_membership: LiRA membership inference on a classifier trained on the private (real) data
versus one trained on synthetic data made from it (Real-Fake Sec. 4.5, Fig. 3).

The private set is the train split (``realfake.privacy.private_size``: a class-proportional subset of it, drawn
with ``seed``). ``realfake.privacy.shadows`` experiments each take the half of it given by the keep mask
(pkeep 0.5, seed 0, as the released code): the *private* arm trains the classifier on that half; the
*synthetic* arm finetunes the ``full`` LoRA on that half only, synthesizes one img2img image per member, and
trains the classifier on those; with ``realfake.privacy.overfit_epochs`` the *private_overfit* arm trains it
on the half without augmentation for that many epochs, a target that leaks, so the report shows what the
attack finds where there is leakage. Every experiment in turn is the target, the others its shadows.
Writes ``attack_membership.{json,md}`` in ``--out`` (``reports/realfake/``), the ROC curves and the per-image statistics.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from synthgap.config import TrainConfig
from synthgap.data import load_processed
from synthgap.data.splits import proportional_subset
from synthgap.errors import run_main
from synthgap.metrics import predict_logits
from synthgap.noise import image_seeds
from synthgap.paths import atomic_save_npz, atomic_write_json, repo_root
from synthgap.realfake.finetune import train_unet
from synthgap.realfake.guidance import guidance_embeddings, image_embeddings
from synthgap.realfake.pipeline import finetune_settings, load_model, prompts_for, synthesis_spec, train_cell
from synthgap.realfake.privacy import auc, auc_interval, keep_mask, leave_one_out, logit_confidence, roc, tpr_at_fpr
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
        private = (np.arange(len(data.y_train)) if privacy.private_size is None
                   else proportional_subset(data.y_train, min(privacy.private_size, len(data.y_train)),
                                            derive_seed(params.seed, STAGE, "private")))
        x, y = to_device_tensors(data.x_train[private], data.y_train[private], device)
        all_prompts = prompts_for(cfg, data, repo_root())
        prompts = [all_prompts[i] for i in private]
        keep = keep_mask(privacy.shadows, len(y), seed=0)
        recipes = {"private": cfg.classifier.train, "synthetic": cfg.classifier.train}
        if privacy.overfit_epochs:
            recipes["private_overfit"] = overfit_recipe(cfg.classifier.train, privacy.overfit_epochs)
        phi = {arm: np.zeros(keep.shape) for arm in recipes}
        base = load_model(cfg, paths.stand_in, repo_root(), device)  # each shadow finetunes a fresh copy
        for k, members in enumerate(keep):
            idx = torch.from_numpy(np.flatnonzero(members)).to(device)
            with run.child(f"{STAGE}/shadow={k}", {"shadow": k, "n_members": int(members.sum())}) as child:
                seed = derive_seed(params.seed, STAGE, k)
                model = copy.deepcopy(base)
                settings = finetune_settings(cfg, "full", steps=privacy.finetune_steps, device=device)
                tokens = guidance_embeddings(image_embeddings(model.image_encoder, x[idx]), y[idx], settings.guidance)
                member_prompts = [prompts[i] for i in idx.tolist()]
                projection, _ = train_unet(model, x[idx], member_prompts, tokens, settings, seed=seed, device=device,
                                           desc=f"{STAGE} lora {k}")
                seeds = image_seeds(seed, torch.arange(len(idx)), STAGE).tolist()
                fake = synthesize(model, synthesis_spec(cfg, "img2img", lora=True), member_prompts, seeds,
                                  sources=x[idx], tokens=tokens, projection=projection, out_channels=c, out_size=h,
                                  desc=f"{STAGE} synthesize {k}").to(device)
                for arm, recipe in recipes.items():
                    xa = fake if arm == "synthetic" else x[idx]
                    model_k, _ = train_cell(cfg.classifier.model_copy(update={"train": recipe}), xa, y[idx],
                                            data.num_classes, seed=derive_seed(seed, arm), device=device, evals={},
                                            desc=f"{STAGE} {arm} {k}")
                    phi[arm][k] = logit_confidence(predict_logits(model_k, x), y)
                child.log_metrics({f"{arm}_mean_phi_in": float(phi[arm][k][members].mean()) for arm in phi}
                                  | {f"{arm}_mean_phi_out": float(phi[arm][k][~members].mean()) for arm in phi})
        rows, curves, metrics = [], {}, {}
        for arm, values in phi.items():
            curves[arm] = {}
            for attack, (scores, is_member) in leave_one_out(values, keep).items():
                curves[arm][attack] = roc(scores, is_member)
                row = {"training_data": arm, "attack": attack, "auc": auc(scores, is_member),
                       "auc_ci95": list(auc_interval(scores, is_member, len(y)))}
                row |= {f"tpr_at_fpr_{f:g}": 100 * tpr_at_fpr(scores, is_member, f) for f in privacy.fpr}
                rows.append(row)
                metrics |= {f"{arm}_{attack}_{k}": v for k, v in row.items() if k not in ("training_data", "attack", "auc_ci95")}
        reports = paths.out
        table = [{"training_data": r["training_data"], "attack": r["attack"],
                  "auc (95 % CI)": f"{r['auc']:.3f} [{r['auc_ci95'][0]:.3f}, {r['auc_ci95'][1]:.3f}]",
                  **{k: round(v, 2) for k, v in r.items() if k.startswith("tpr_at_fpr")}} for r in rows]
        write_table(table, reports / STAGE, f"LiRA, {privacy.shadows} experiments on {len(y)} private images (TPR in "
                    f"%; the smallest reachable FPR is 1/{int((~keep).sum())} non-member trials)")
        roc_figure(curves, reports / f"{STAGE}.png")
        atomic_save_npz(reports / f"{STAGE}_phi.npz", keep=keep, **{f"phi_{a}": v for a, v in phi.items()})
        atomic_write_json(reports / f"{STAGE}.json", {"rows": rows, "shadows": privacy.shadows, "private_images": len(y),
                                                      "private_index": private.tolist()})
        run.log_metrics(metrics)
        run.log_artifact(reports / f"{STAGE}.md")
        run.log_artifact(reports / f"{STAGE}.png")
        for row in rows:
            print(f"{STAGE}: {row['training_data']:15s} {row['attack']:14s} AUC {row['auc']:.3f} "
                  f"(95 % CI {row['auc_ci95'][0]:.3f}-{row['auc_ci95'][1]:.3f})")


def overfit_recipe(train, epochs: int):
    """The classifier recipe of the private_overfit arm: no augmentation, ``epochs`` epochs, the lr milestones
    at the same fractions of the run."""
    scale = epochs / train.epochs
    return TrainConfig.model_validate(train.model_dump() | {  # validated, as EquivalenceConfig.train_recipe
        "epochs": epochs, "crop_padding": 0, "flip": False, "cutout": 0, "erasing": False,
        "milestones": [max(1, round(m * scale)) for m in train.milestones]})


if __name__ == "__main__":
    run_main(main)
