"""Figures written by the stages (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from synthgap.paths import atomic_write_with  # noqa: E402


def save_figure(fig, path: Path) -> None:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def training_curves(history: list[dict], path: Path, title: str) -> None:
    """Loss and accuracy per epoch for every split present in the history records."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for key in [k for k in history[0] if k.endswith("_top1")]:
        ax_acc.plot(epochs, [r[key] for r in history], label=key.removesuffix("_top1"))
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


def per_class_bars(values: list[float], classes: tuple[str, ...], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(classes)), 3.4))
    ax.bar(range(len(values)), values, color="tab:blue")
    ax.set_xticks(range(len(values)), [c[:12] for c in classes], rotation=60 if len(classes) > 10 else 0, ha="right" if len(classes) > 10 else "center")
    ax.set(ylabel="top-1 accuracy (%)", ylim=(0, 100), title=title)
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def class_columns(labels, num_classes: int, per_class: int = 8):
    """Indices that tile a grid with one column per class (``per_class`` rows, fewer if a class is short)."""
    import numpy as np

    labels = np.asarray(labels)
    rows = min(per_class, *(int((labels == c).sum()) for c in range(num_classes)))
    return np.stack([np.flatnonzero(labels == c)[:rows] for c in range(num_classes)], 1).reshape(-1)


def sample_grid(images, per_row: int, path: Path, title: str) -> None:
    """uint8 images (N, C, H, W) tiled ``per_row`` to a row."""
    import numpy as np

    x = images.permute(0, 2, 3, 1).cpu().numpy()
    n, h, w, c = x.shape
    rows = (n + per_row - 1) // per_row
    canvas = np.full((rows * (h + 1), per_row * (w + 1), c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, per_row)
        canvas[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = x[i]
    fig, ax = plt.subplots(figsize=(max(3, per_row * 0.5), max(3, rows * 0.5)))
    ax.imshow(canvas.squeeze(-1) if c == 1 else canvas, cmap="gray" if c == 1 else None, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    save_figure(fig, path)
