"""bench.png: prefill time, decode time per token and peak memory against context length."""
from __future__ import annotations

from pathlib import Path

PANELS = (("prefill_s", "prefill (s)", 1.0), ("decode_s_per_token", "decode (ms / token)", 1e3),
          ("peak_mem_bytes", "peak memory (MiB)", 1 / 1024 ** 2))


def plot(result: dict, path: Path) -> None:
    import matplotlib  # deferred: slow to import, only for the figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.2))
    for ax, (key, label, scale) in zip(axes, PANELS):
        for model in dict.fromkeys(r["model"] for r in rows):
            pts = [(r["tokens"], r[key] * scale) for r in rows if r["model"] == model and r.get(key)]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=model)
            oom = [r["tokens"] for r in rows if r["model"] == model and r["oom"]]
            for x in oom:
                ax.axvline(x, ls=":", lw=1, color="gray")
                ax.annotate(f"{model} OOM", (x, 0.95), xycoords=("data", "axes fraction"), rotation=90,
                            fontsize=7, ha="right", va="top")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (tokens)")
        ax.set_title(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    dev = result["environment"]["device"]["name"]
    models = result["settings"]["models"]
    fig.suptitle(f"mmmamba bench, {models['model_dir'] or models['size']} shapes, {result['dtype']}, {dev}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
