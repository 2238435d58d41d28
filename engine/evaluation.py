"""Classification evaluator: accuracy, error and macro-F1, printed in the reference's log format."""

from __future__ import annotations

import numpy as np
import torch


def compute_accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> list[float]:
    maxk = max(topk)
    pred = output.topk(maxk, 1, True, True).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum().item() * 100.0 / target.numel() for k in topk]


def classification_report(logits: torch.Tensor, labels: torch.Tensor, classnames: list[str]) -> dict:
    pred = logits.argmax(1).cpu().numpy()
    gt = labels.cpu().numpy()
    correct = int((pred == gt).sum())
    total = int(len(gt))
    acc = 100.0 * correct / max(total, 1)
    per_class = {}
    for label in np.unique(gt):
        mask = gt == label
        name = classnames[label] if label < len(classnames) else str(label)
        per_class[name] = float(100.0 * (pred[mask] == label).mean())
    return {
        "total": total,
        "correct": correct,
        "accuracy": acc,
        "error": 100.0 - acc,
        "macro_f1": 100.0 * macro_f1(gt, pred),
        "per_class_accuracy": per_class,
        # How many test images were given each label: shows a run whose predictions collapsed
        # onto one class (accuracy alone cannot tell that from a weak model).
        "prediction_counts": {
            (classnames[i] if i < len(classnames) else str(i)): int((pred == i).sum())
            for i in range(logits.shape[1])
        },
    }


def macro_f1(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the classes present in `gt` of F1 = 2 TP / (2 TP + FP + FN): scikit-learn's
    f1_score(average="macro", labels=np.unique(gt)), same arithmetic, without importing scikit-learn
    (about a second per evaluating process)."""
    labels = np.unique(gt)
    tp = np.array([np.sum((pred == c) & (gt == c)) for c in labels], dtype=np.float64)
    true_sum = np.array([np.sum(gt == c) for c in labels], dtype=np.float64)
    pred_sum = np.array([np.sum(pred == c) for c in labels], dtype=np.float64)
    return float(np.average(2.0 * tp / (true_sum + pred_sum))) if len(labels) else 0.0


def report_lines(report: dict, per_class: bool = False) -> list[str]:
    lines = [
        "=> result",
        f"* total: {report['total']:,}",
        f"* correct: {report['correct']:,}",
        f"* accuracy: {report['accuracy']:.2f}%",
        f"* error: {report['error']:.2f}%",
        f"* macro_f1: {report['macro_f1']:.2f}%",
    ]
    if per_class:
        lines.append("=> per-class result")
        lines += [f"* class: {name}\tacc: {acc:.1f}%" for name, acc in report["per_class_accuracy"].items()]
    return lines
