"""Train/validation curves, with an overfitting warning when they diverge."""
from __future__ import annotations

from pathlib import Path

from vistrain.evaluation.png import new_figure, save_figure


def overfitting_warning(history: list[dict], window: int = 3) -> str | None:
    """A message when val loss rose over the last ``window`` epochs while train loss fell."""
    if len(history) < window + 2:
        return None
    best_val = min(h["val_loss"] for h in history)
    last = history[-window:]
    rising = all(b["val_loss"] > a["val_loss"] for a, b in zip(last, last[1:]))
    falling = last[-1]["train_loss"] < last[0]["train_loss"]
    gap = last[-1]["val_loss"] - best_val
    if rising and falling and gap > 0.05 * max(best_val, 1e-8):
        return (f"possible overfitting: validation loss rose for {window} epochs "
                f"({best_val:.3f} -> {last[-1]['val_loss']:.3f}) while training loss fell; "
                "the best epoch's weights were kept. More augmentation, more weight decay or "
                "fewer epochs may help.")
    return None


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Two panels: loss and accuracy per epoch, train vs validation."""
    epochs = [h["epoch"] for h in history]
    fig = new_figure((10, 3.6), layout=None)
    axes = fig.subplots(1, 2)
    for ax, key in zip(axes, ("loss", "accuracy")):
        for part, style in (("train", "-o"), ("val", "-s")):
            vals = [h.get(f"{part}_{key}") for h in history]
            if any(v is not None for v in vals):
                ax.plot(epochs, vals, style, ms=3, label=part)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
