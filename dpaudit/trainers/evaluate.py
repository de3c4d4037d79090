"""Utility metrics of a trained model: held-out loss and perplexity, or accuracy and F1.

Language models: token-level cross-entropy over scored tokens 1..T−1 (padding
never scored), perplexity = exp(loss). Classifiers: accuracy, macro-averaged
F1 and cross-entropy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dpaudit.trainers.data import EncodedExamples, collate
from dpaudit.trainers.models import autocast


def evaluate(
    model: Any,
    examples: EncodedExamples,
    *,
    task: str,
    pad_id: int,
    input_names: tuple[str, ...],
    device: Any,
    precision: str = "fp32",
    batch_size: int = 32,
) -> dict[str, float]:
    """Metrics of ``model`` on ``examples`` (no gradients, eval mode).

    Returns:
        Causal LM: ``loss`` (per token), ``perplexity``, ``example_loss`` (mean
        of per-example mean token losses, the training objective), ``tokens``.
        Classification: ``loss``, ``accuracy``, ``f1`` (macro),
        ``majority_share`` (share of the most common label: the accuracy of
        always predicting it) and ``predicted_classes`` (distinct classes
        predicted; 1 for a model that predicts one class whatever the input).
        A model whose accuracy is no better than ``majority_share`` did not learn
        (docs/decisions.md, "Parts that could not be measured").
    """
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    n = len(examples)
    tok_sum, tok_count, ex_losses, preds, labels = 0.0, 0, [], [], []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = list(range(start, min(n, start + batch_size)))
            inputs, targets = collate(
                examples, idx, pad_id=pad_id, task=task, input_names=input_names, device=device
            )
            with autocast(device, precision):
                logits = model(**inputs).logits.float()
            if task == "causal_lm":
                tgt = targets[:, 1:]
                tok = F.cross_entropy(
                    logits[:, :-1].reshape(-1, logits.size(-1)),
                    tgt.reshape(-1),
                    reduction="none",
                    ignore_index=-100,
                ).view(tgt.shape)
                count = (tgt != -100).sum(dim=1)
                tok_sum += float(tok.sum())
                tok_count += int(count.sum())
                ex_losses.extend((tok.sum(dim=1) / count.clamp(min=1)).tolist())
            else:
                ex_losses.extend(F.cross_entropy(logits, targets, reduction="none").tolist())
                preds.extend(logits.argmax(dim=-1).tolist())
                labels.extend(targets.tolist())
    model.train(was_training)
    if task == "causal_lm":
        loss = tok_sum / tok_count if tok_count else math.nan
        return {
            "loss": loss,
            "perplexity": math.exp(loss) if tok_count else math.nan,
            "example_loss": float(np.mean(ex_losses)) if ex_losses else math.nan,
            "tokens": float(tok_count),
        }
    return {
        "loss": float(np.mean(ex_losses)) if ex_losses else math.nan,
        "accuracy": float(np.mean(np.asarray(preds) == np.asarray(labels))) if preds else math.nan,
        "f1": macro_f1(labels, preds),
        "majority_share": majority_share(labels),
        "predicted_classes": len(set(preds)),
    }


def majority_share(labels: list[int]) -> float:
    """Share of the most common label (nan when empty): the accuracy of always predicting it."""
    if not labels:
        return math.nan
    return float(np.max(np.unique(np.asarray(labels), return_counts=True)[1]) / len(labels))


def macro_f1(labels: list[int], preds: list[int]) -> float:
    """Macro-averaged F1 over the classes present in ``labels`` or ``preds`` (nan when empty).

    scikit-learn's ``f1_score(average="macro")``; a class never predicted
    correctly scores 0 (``zero_division=0``).
    """
    if not labels:
        return math.nan
    from sklearn.metrics import f1_score

    return float(f1_score(labels, preds, average="macro", zero_division=0))
