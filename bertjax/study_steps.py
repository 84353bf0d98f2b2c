"""Per-checkpoint studies (configs/pretrain.py get_study('steps'), the BERT paper's Figure 5).

Each point (MLM + NSP and LTR by default) pretrains keeping every checkpoint (one each
train.checkpoint_every steps and the last; the study fixes train.keep_checkpoints high), and each
kept checkpoint (or those of --steps) is fine-tuned from its own folder
`<point>/checkpoints/<step>`. Layout: <workdir>/<point>/step_<step>/glue_<mode>/. The table has
a row per (point, step) with the held-out pretraining metrics logged at that step, when an
evaluation ran there; downstream.{png,svg} plots the downstream average against pretraining
steps, one line per point, random init dashed.

The paper's Figure 5 (MNLI-m accuracy of BERT-base against 200k..1M pretraining steps, MLM and
LTR) gives its values only as a plot: no reference line is drawn from it here (its text: 1M
steps give almost 1.0 point more MNLI accuracy than 500k).
"""
from __future__ import annotations

import json
import pathlib
from typing import Callable, Mapping, Sequence

from bertjax import checkpoint


def check_steps(study: Mapping, config, steps: Sequence[int]) -> None:
    """--steps: only for a per-checkpoint study, and each a step the run will keep."""
    if not steps:
        return
    if not study.get("per_checkpoint"):
        raise ValueError(f"--steps {list(steps)}: only a per-checkpoint study (steps) takes "
                         "steps; this one fine-tunes each point's final checkpoint")
    every, last = config.train.checkpoint_every, config.train.steps
    bad = [s for s in steps if not (0 < s <= last and (s % every == 0 or s == last))]
    if bad:
        raise ValueError(f"--steps {bad}: no checkpoint is kept there; the run keeps one each "
                         f"train.checkpoint_every={every} steps and the last "
                         f"(train.steps={last})")


def kept_steps(point_dir: pathlib.Path) -> list[int]:
    """The finished checkpoint steps of a pretraining workdir (a half-written
    `<step>.orbax-checkpoint-tmp` is not one)."""
    root = point_dir / checkpoint.CHECKPOINT_SUBDIR
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir()) \
        if root.is_dir() else []


def _eval_at(point_dir: pathlib.Path, step: int) -> dict:
    path = point_dir / "metrics.jsonl"
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("split") == "eval" and r.get("step") == step:
            out = r
    return out


def checkpoint_rows(cfgs, root: pathlib.Path, steps: Sequence[int], progress,
                    glue_columns: Callable[[str, pathlib.Path, str], dict], *,
                    runs_per_init: int, baseline_runs: int) -> list[dict]:
    """One row per (point, kept step): its pretraining metrics there and its downstream
    columns. `glue_columns(init_checkpoint, workdir, label)` fine-tunes and scores one init."""
    from bertjax import study
    todo = []
    for n, overrides, _ in cfgs:
        have = kept_steps(root / n)
        missing = sorted(set(steps) - set(have))
        if missing:
            raise ValueError(f"--steps {missing}: point {n} kept no checkpoint there; it has "
                             f"{have} (in {root / n / checkpoint.CHECKPOINT_SUBDIR})")
        todo += [(n, overrides, s) for s in (sorted(steps) or have)]
    progress.total["fine-tuning"] = len(todo) * runs_per_init + baseline_runs
    rows = []
    for n, overrides, s in todo:
        init = root / n / checkpoint.CHECKPOINT_SUBDIR / str(s)
        row = {"point": n, "init": "pretrained", **study._swept(overrides), "step": s,
               **study.eval_columns(_eval_at(root / n, s))}
        row.update(glue_columns(str(init), root / n / f"step_{s}", f"{n} @ step {s}"))
        rows.append(row)
    return rows


def write_figure(root: pathlib.Path, name: str, rows: Sequence[Mapping],
                 modes: Sequence[str]) -> list[str]:
    """downstream.{png,svg}: downstream average (per mode) against pretraining steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bertjax import study
    fig, ax = plt.subplots(figsize=(7, 4.5))
    points = list(dict.fromkeys(r["point"] for r in rows if r["init"] == "pretrained"))
    for mode in modes:
        key = f"{mode}:avg" if len(modes) > 1 else "avg"
        for p in points:
            pts = sorted((r["step"], r[key]) for r in rows
                         if r["point"] == p and r.get(key) is not None)
            if pts:
                ax.plot(*zip(*pts), "o-", label=f"{p}, {mode}" if len(modes) > 1 else p)
        for r in rows:
            if r["init"] == "random" and r.get(key) is not None:
                ax.axhline(r[key], ls="--", lw=1, color="gray",
                           label=f"random init, {mode}" if len(modes) > 1 else "random init")
    ax.set(xlabel="pretraining steps", ylabel="downstream dev average (x100)",
           title=f"study {name}: downstream against pretraining steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    written = study._save(fig, root / "downstream")
    plt.close(fig)
    return written
