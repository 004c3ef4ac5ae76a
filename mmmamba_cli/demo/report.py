"""The demo's side-by-side report: accuracy, retention, speed and memory, as JSON, markdown and PNG."""
from __future__ import annotations

import time
from pathlib import Path

from ..io.files import write_json_atomic
from ..io.save import git_sha

ORDER = ("teacher", "linear", "hybrid", "seeded")
QUESTION_TYPES = ("color", "shape", "yes/no")  # easy-vqa's question categories (evaluate/tasks.py)


def _accuracy(entry: dict) -> float:
    m = entry["metrics"]
    return float(m["accuracy"] if "accuracy" in m else m["score"])


def _bench_at(rows: list[dict], kind: str, tokens: int) -> dict | None:
    return next((r for r in rows if r["model"] == kind and r["tokens"] == tokens), None)


def build_report(models: dict, ev: dict, bench: dict | None, timings: dict, recipe) -> dict:
    import dataclasses

    teacher_acc = _accuracy(ev["teacher"])
    report: dict = {"task": "easyvqa-test", "questions": ev["teacher"]["metrics"].get("n"),
                    "git_sha": git_sha(), "date": time.strftime("%Y-%m-%d %H:%M"), "timings_s": timings,
                    "recipe": dataclasses.asdict(recipe)}
    rows = (bench or {}).get("rows", [])
    longest = max((r["tokens"] for r in rows), default=None)
    for label in [k for k in ORDER if k in ev]:
        acc = _accuracy(ev[label])
        by_type = ev[label]["metrics"].get("by_category", {})
        entry = {"path": str(models[label]), "accuracy": acc, "retention": acc / teacher_acc if teacher_acc else None,
                 "by_type": {t: by_type[t] for t in QUESTION_TYPES if t in by_type}, "metrics": ev[label]["metrics"]}
        row = _bench_at(rows, label, longest) if longest else None
        if row is not None:
            entry["bench"] = {k: row.get(k) for k in ("tokens", "prefill_s", "decode_s_per_token", "peak_mem_bytes",
                                                       "cache_bytes", "oom")}
        report[label] = entry
    report["bench"] = {"rows": rows, "longest_tokens": longest, "device": (bench or {}).get("device")}
    return report


def table(report: dict) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The demo's table, once for every renderer: column labels and (row name, cells) rows."""
    labels = [k for k in ORDER if k in report]

    def row(name: str, fn) -> tuple[str, list[str]]:
        cells = []
        for k in labels:
            try:
                cells.append(fn(report[k]))
            except (KeyError, TypeError):
                cells.append("-")
        return name, cells

    rows = [row("accuracy", lambda e: f"{e['accuracy']:.4f}"),
            row("retention", lambda e: f"{e['retention']:.3f}")]
    rows += [row(f"  {t} questions", lambda e, t=t: f"{e['by_type'][t]:.4f}")
             for t in QUESTION_TYPES if any(t in report[k].get("by_type", {}) for k in labels)]
    n = report["bench"].get("longest_tokens")
    if n:
        rows += [row(f"prefill s @ {n}", lambda e: f"{e['bench']['prefill_s']:.3f}"),
                 row(f"decode ms/tok @ {n}", lambda e: f"{1000 * e['bench']['decode_s_per_token']:.2f}"),
                 row(f"peak MB @ {n}", lambda e: f"{e['bench']['peak_mem_bytes'] / 2**20:.0f}"),
                 row(f"decode state MB @ {n}", lambda e: f"{e['bench']['cache_bytes'] / 2**20:.2f}")]
    return labels, rows


def markdown(report: dict) -> str:
    labels, rows = table(report)
    lines = [f"# mmmamba demo report ({report['date']}, git {report['git_sha'][:10]})", "",
             f"easy-vqa test split, {report.get('questions') or 'all'} questions; teacher = embedded tiny HoVLE. "
             "Decode state: KV cache (attention) or conv + SSM state (Mamba).", "",
             "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {name.strip()} | " + " | ".join(cells) + " |" for name, cells in rows]
    lines += ["", "Stage timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()), "",
              "Reproduce: `make demo` (or `mmmamba demo --out runs/demo --force`).", ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [k for k in ORDER if k in report]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].bar(labels, [report[k]["accuracy"] for k in labels], color=["#444", "#1f77b4", "#2ca02c", "#bbb"][:len(labels)])
    axes[0].set_ylim(0, 1)
    axes[0].set_title("easy-vqa test accuracy")
    rows = report["bench"]["rows"]
    for kind in ("teacher", "linear", "hybrid"):
        pts = sorted((r["tokens"], r) for r in rows if r["model"] == kind and not r.get("oom"))
        if not pts:
            continue
        xs = [t for t, _ in pts]
        axes[1].plot(xs, [1000 * (r["decode_s_per_token"] or float("nan")) for _, r in pts], "o-", label=kind)
        axes[2].plot(xs, [(r.get("cache_bytes") or 0) / 2**20 for _, r in pts], "o-", label=kind)
    axes[2].set_yscale("log")
    for ax, title in ((axes[1], "decode ms / token"), (axes[2], "decode state: KV or conv+SSM (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("context tokens")
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:  # nothing to label when the benchmark was skipped
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict, out: Path) -> None:
    write_json_atomic(out / "report.json", report)
    tmp = out / ".report.md.tmp"
    tmp.write_text(markdown(report))
    tmp.replace(out / "report.md")
    plot(report, out / ".report.tmp.png")
    (out / ".report.tmp.png").replace(out / "report.png")
