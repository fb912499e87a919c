"""Effort and quality per round and mode: tables (rich), a PNG plot (matplotlib) and an HTML report.

Rows come from the round steps (`pipelines/round_steps.py`): the `effort` step of each round and
the `modes` step of round 1 (the three modes measured on round 1's videos with the base model)."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

COLUMNS = ("frames_edited_pct", "clicks_per_frame", "clicks_per_edited_frame", "seconds_per_frame")
ROUND_COLUMNS = ("round",) + COLUMNS + ("accepted_first_pass_pct", "val_jf", "promoted", "model_version",
                                         "train_seconds")


def load_rows(engine, dataset: str) -> tuple[dict, list[dict]]:
    """(modes, round rows) stored in pipeline_runs for `dataset`."""
    from sqlalchemy import select

    from storage.schema import PipelineRun, RunStatus

    modes, rounds = {}, []
    with engine.connect() as c:
        for key, result in c.execute(select(PipelineRun.run_key, PipelineRun.result)
                                     .where(PipelineRun.run_key.like(f"{dataset}/round%"),
                                            PipelineRun.status == RunStatus.SUCCEEDED)):
            step = key.rsplit("/", 1)[1]
            if step == "effort":
                rounds.append(result)
            elif step == "modes" and key.endswith("round1/modes"):
                modes = result
    return modes, sorted(rounds, key=lambda r: r["round"])


def tables(modes: dict, rounds: list[dict]):
    from rich.table import Table

    t1 = Table(title="annotation modes (round 1 videos, base model)")
    t1.add_column("mode")
    for c in COLUMNS:
        t1.add_column(c)
    for m, r in modes.items():
        t1.add_row(m, *[_fmt(r.get(c)) for c in COLUMNS])
    t2 = Table(title="rounds (interactive, through Label Studio)")
    for c in ROUND_COLUMNS:
        t2.add_column(c)
    for r in rounds:
        t2.add_row(*[_fmt(r.get(c)) for c in ROUND_COLUMNS])
    return t1, t2


def print_tables(console, result: dict) -> None:
    """The two tables of a `run_rounds` result (`dataengine demo --rounds N`)."""
    for t in tables(result.get("modes") or {}, result.get("rounds") or []):
        console.print(t)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "-" if v is None else str(v)


def plot(modes: dict, rounds: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    if modes:
        names = list(modes)
        axes[0].bar(names, [modes[m].get("clicks_per_frame") or 0 for m in names], color="#4c72b0")
        axes[0].set_title("clicks per frame by mode")
    xs = [r["round"] for r in rounds]
    axes[1].plot(xs, [r.get("frames_edited_pct") or 0 for r in rounds], "o-", label="% frames edited")
    axes[1].plot(xs, [r.get("clicks_per_frame") or 0 for r in rounds], "s-", label="clicks / frame")
    axes[1].plot(xs, [r.get("seconds_per_frame") or 0 for r in rounds], "^-", label="s / frame")
    axes[1].set_title("effort per round (interactive)")
    axes[1].set_xlabel("round")
    axes[1].legend(fontsize=8)
    axes[2].plot(xs, [r.get("round_model_val_jf") or 0 for r in rounds], "s:",
                 label="J&F of the model the round started from")
    axes[2].plot(xs, [r.get("val_jf") or 0 for r in rounds], "o-", label="production J&F after the gate")
    axes[2].plot(xs, [r.get("candidate_val_jf") or 0 for r in rounds], "x--", label="candidate J&F")
    axes[2].set_title("validation J&F")
    axes[2].set_xlabel("round")
    axes[2].legend(fontsize=8)
    for ax in axes[1:]:
        ax.set_xticks(xs)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _html_table(cols, rows) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(settings, dataset: str, modes: dict, rounds: list[dict],
                 out_dir: Path | None = None) -> dict:
    out = Path(out_dir or settings.ensure_work_dir() / "reports" / dataset).resolve()
    out.mkdir(parents=True, exist_ok=True)
    png = plot(modes, rounds, out / "effort.png")
    img = base64.b64encode(png.read_bytes()).decode()
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>dataengine effort: {html.escape(dataset)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}</style></head><body>
<h1>Effort and quality: {html.escape(dataset)}</h1>
<p>A "frame" is one object's mask on one frame. Clicks: SAM 2 clicks plus polygon vertices. Seconds: the scripted annotator's time model (docs/annotation.md).</p>
<h2>Modes (round 1 videos, base model)</h2>
{_html_table(("mode",) + COLUMNS, [(m, *[r.get(c) for c in COLUMNS]) for m, r in modes.items()])}
<h2>Rounds (interactive, through Label Studio)</h2>
{_html_table(ROUND_COLUMNS, [[r.get(c) for c in ROUND_COLUMNS] for r in rounds])}
<img src="data:image/png;base64,{img}" alt="effort plot">
<script type="application/json" id="data">{html.escape(json.dumps({"modes": modes, "rounds": rounds}))}</script>
</body></html>"""
    page = out / "report.html"
    page.write_text(doc)
    return {"png": png, "html": page}
