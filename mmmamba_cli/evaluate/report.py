"""Results on disk: results.json, a markdown table (one column per model) and per-item predictions."""
from __future__ import annotations

import json
from pathlib import Path

from ..io.files import atomic_dir, write_json_atomic

SECTIONS = ("metrics", "fidelity", "lm_eval")  # per-model result sections, in table order
HIDDEN = frozenset({"n", "tokens"})  # counts: in the JSON, not in the table


def model_labels(paths: list[str | Path]) -> list[str]:
    """Short unique column names: the directory name, with its parent's when names clash."""
    names = [Path(p).name or str(p) for p in paths]
    out = []
    for p, name in zip(paths, names):
        out.append(f"{Path(p).parent.name}/{name}" if names.count(name) > 1 else name)
    return [f"{label} ({i})" if out.count(label) > 1 else label for i, label in enumerate(out)]


def flatten(result: dict) -> dict[str, float]:
    """One model's sections as ``{"row name": value}``; nested dicts become ``outer/inner``."""
    rows: dict[str, float] = {}

    def add(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                add(f"{prefix}/{k}" if prefix else str(k), v)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows[prefix] = value

    for section in SECTIONS:
        if section in result:
            data = {k: v for k, v in result[section].items() if k not in HIDDEN}
            add("" if section == "metrics" else section, data)
    return rows


def table(report: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """(column labels, rows of (metric, formatted value per model)); '-' where a model lacks it."""
    labels = [m["label"] for m in report["models"]]
    flat = [flatten(m) for m in report["models"]]
    names = list(dict.fromkeys(k for f in flat for k in f))
    return labels, [(name, [fmt(f.get(name)) for f in flat]) for name in names]


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def markdown(report: dict) -> str:
    labels, rows = table(report)
    task = report.get("task") or {}
    title = f"# eval: {task.get('name', 'lm-eval')}" + (f" ({task['kind']}, {task['items']} items)" if task else "")
    lines = [title, "", "| metric | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(values) + " |" for name, values in rows]
    return "\n".join(lines) + "\n"


def write_results(out: str | Path, report: dict, predictions: dict[str, list[dict]] | None = None,
                  force: bool = False) -> Path:
    """Write the directory atomically: results.json, results.md, predictions/<label>.jsonl."""
    with atomic_dir(out, force) as tmp:
        write_json_atomic(tmp / "results.json", report)
        (tmp / "results.md").write_text(markdown(report))
        if predictions:
            (tmp / "predictions").mkdir()
            for i, (label, records) in enumerate(predictions.items()):
                name = "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or f"model{i}"
                with (tmp / "predictions" / f"{name}.jsonl").open("w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in records)
    return Path(out)
