"""A RULER run's report: the task x length table (terminal, results.md), results.json and a plot."""

from __future__ import annotations

import json
from pathlib import Path


def markdown_table(results: dict) -> str:
    """Scores (string_match_all, %) with tasks as rows, lengths as columns and an average row."""
    lengths = [str(n) for n in results["lengths"]]
    lines = ["| task | " + " | ".join(lengths) + " |", "|---|" + "---:|" * len(lengths)]
    for task, row in results["scores"].items():
        lines.append(f"| {task} | " + " | ".join(f"{row[n]:.1f}" for n in lengths) + " |")
    lines.append("| **average** | " + " | ".join(f"**{results['average'][n]:.1f}**" for n in lengths) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path, title: str) -> Path:
    """Accuracy by length: one line per task, the average in bold, lengths on a log2 axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = results["lengths"]
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    colors = plt.get_cmap("tab20").colors  # 20 distinct colours: every task its own
    for i, (task, row) in enumerate(results["scores"].items()):
        ax.plot(lengths, [row[str(n)] for n in lengths], marker="o", lw=1, ms=3, label=task, alpha=0.85,
                color=colors[i % len(colors)])
    ax.plot(lengths, [results["average"][str(n)] for n in lengths], color="black", lw=2.5, marker="s", label="average")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in lengths])
    ax.set_ylim(-3, 103)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("string_match_all (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: lines stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results: dict, folder: str | Path, title: str) -> list[Path]:
    """results.json (with every sample's prediction), results.md and ruler.png in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "results.json", folder / "results.md"
    json_path.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    md_path.write_text(f"# RULER: {title}\n\n{markdown_table(results)}\n")
    return [json_path, md_path, plot(results, folder / "ruler.png", title)]
