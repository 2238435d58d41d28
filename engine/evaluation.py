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
    from sklearn.metrics import f1_score  # scikit-learn loads in about a second: only when a report is made

    return {
        "total": total,
        "correct": correct,
        "accuracy": acc,
        "error": 100.0 - acc,
        "macro_f1": float(100.0 * f1_score(gt, pred, average="macro", labels=np.unique(gt))),
        "per_class_accuracy": per_class,
        # How many test images were given each label: shows a run whose predictions collapsed
        # onto one class (accuracy alone cannot tell that from a weak model).
        "prediction_counts": {
            (classnames[i] if i < len(classnames) else str(i)): int((pred == i).sum())
            for i in range(logits.shape[1])
        },
    }


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
