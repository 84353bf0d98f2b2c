"""Fine-tuning outputs: the summary across tasks and seeds, comparison tables.

GLUE metrics are fractions (shown x100); SQuAD's EM and F1 are already 0-100, as the official
scripts print them (its results.json says so with metric_scale: 100)."""
from __future__ import annotations

import csv
import json
import pathlib
from typing import Mapping, Sequence

import numpy as np

from bertjax import records
from bertjax.finetune import kinds
from bertjax.finetune.glue import metrics, tasks

# Display names of the metric keys, in the order tables show them.
_METRIC_NAMES = {"accuracy": "acc", "exact_match": "EM", "f1": "F1", "mcc": "MCC", "pearson": "Pearson",
                 "spearman": "Spearman", "accuracy_m": "acc-m", "accuracy_mm": "acc-mm"}


def format_metrics(m: Mapping[str, float], scale: float = 1.0) -> str:
    keys = [k for k in _METRIC_NAMES if k in m]
    return "/".join(f"{100 / scale * m[k]:.1f}" for k in keys)


def metric_label(m: Mapping[str, float]) -> str:
    return "/".join(_METRIC_NAMES[k] for k in _METRIC_NAMES if k in m)


def _spread(task_results: Mapping) -> str:
    """min-max over the chosen grid point's seeds of the primary metric."""
    sel = task_results["selected"]
    vals = [r["dev"][task_results["primary"]] for r in task_results["runs"]
            if r["learning_rate"] == sel["learning_rate"] and r["batch_size"] == sel["batch_size"]]
    f = 100 / task_results.get("metric_scale", 1.0)
    return f"{f * min(vals):.1f}–{f * max(vals):.1f}"


def _rate(x) -> str:
    return f"{x:.0f}" if x else "–"


def collect(workdir: pathlib.Path, results: Mapping[str, Mapping]) -> dict[str, Mapping]:
    """`results` plus any other task results already in the workdir, in task order (GLUE's,
    then SQuAD's)."""
    found = dict(results)
    names = kinds.task_names()
    for name in names:
        p = workdir / name / "results.json"
        if name not in found and p.exists():
            found[name] = json.loads(p.read_text())
    return {n: found[n] for n in names if n in found}


def write_summary(workdir: pathlib.Path, results: Mapping[str, Mapping],
                  skipped: Mapping[str, str]) -> dict:
    """summary.md (per task: medians over seeds; then every run), summary.csv (every run),
    summary.json. Regenerated from the tasks' results.json files each time."""
    workdir = pathlib.Path(workdir)
    results = collect(workdir, results)
    skipped = {k: v for k, v in skipped.items() if k not in results}
    avg, missing = metrics.bert_paper_average({k: r["metrics"] for k, r in results.items()})
    summary = {
        "tasks": {k: {"metrics": r["metrics"], "selected": r["selected"], "seeds": r["seeds"],
                      "init": r["init"], "mode": r["mode"],
                      "train_examples_per_s": r["train_examples_per_s"],
                      "eval_examples_per_s": r["eval_examples_per_s"],
                      "subsampled": r["subsampled"]} for k, r in results.items()},
        "skipped": dict(skipped),
        "glue_average_bert_paper": avg, "glue_average_missing": missing,
    }
    records.write_json(workdir / "summary.json", summary)

    glue_only = all(n in tasks.TASK_NAMES for n in results)
    lines = ["# GLUE dev results" if glue_only else "# Dev results", ""]
    inits = sorted({r["init"] for r in results.values()})
    modes = sorted({r["mode"] for r in results.values()})
    lines += [f"init: {', '.join(inits)}; mode: {', '.join(modes)}. Dev metrics ×100, median "
              "over seeds at the best grid point (min–max of the selection metric over those "
              "seeds).", ""]
    lines += ["| Task | Metric | Dev (median) | Seeds min–max | lr | batch | seeds | "
              "train ex/s | eval ex/s |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        note = " (subsampled)" if r["subsampled"] else ""
        lines.append(
            f"| {name}{note} | {metric_label(r['metrics'])} | "
            f"{format_metrics(r['metrics'], r.get('metric_scale', 1.0))} | "
            f"{_spread(r)} | {r['selected']['learning_rate']:g} | "
            f"{r['selected']['batch_size']} | {len(r['seeds'])} | "
            f"{_rate(r['train_examples_per_s'])} | {_rate(r['eval_examples_per_s'])} |")
    lines.append("")
    if avg is not None:
        lines.append(f"GLUE average as in the BERT paper (9 scores, WNLI excluded): "
                     f"**{100 * avg:.1f}**")
    elif any(n in tasks.TASK_NAMES for n in results):
        lines.append(f"GLUE average as in the BERT paper: n/a (missing {', '.join(missing)})")
    for name, why in skipped.items():
        lines.append(f"- {name} skipped: {why}")
    lines += ["", "## Every run", "", "| Task | lr | batch | seed | dev | best step / steps |",
              "|---|---|---|---|---|---|"]
    rows = []
    for name, r in results.items():
        for run in r["runs"]:
            lines.append(f"| {name} | {run['learning_rate']:g} | {run['batch_size']} | "
                         f"{run['seed']} | "
                         f"{format_metrics(run['dev'], r.get('metric_scale', 1.0))} | "
                         f"{run['best_step']} / {run['steps']} |")
            chosen = (run["learning_rate"] == r["selected"]["learning_rate"]
                      and run["batch_size"] == r["selected"]["batch_size"])
            rows.append({"task": name, "init": r["init"], "mode": r["mode"],
                         "learning_rate": run["learning_rate"], "batch_size": run["batch_size"],
                         "seed": run["seed"], "selected_grid_point": chosen,
                         **{f"dev_{k}": v for k, v in run["dev"].items()},
                         "best_step": run["best_step"], "steps": run["steps"],
                         "train_examples_per_s": run["train_examples_per_s"],
                         "eval_examples_per_s": run["eval_examples_per_s"]})
    (workdir / "summary.md").write_text("\n".join(lines) + "\n")
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(workdir / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    return summary


def compare_table(workdirs: Sequence[str], labels: Sequence[str] | None = None) -> str:
    """One Markdown table, a column per workdir (e.g. pretrained vs random init), a row per task
    present in any of them: dev medians ×100 and the seeds' spread, plus the GLUE average."""
    labels = list(labels or [pathlib.Path(w).name for w in workdirs])
    found = [collect(pathlib.Path(w), {}) for w in workdirs]
    if not any(found):
        raise FileNotFoundError(f"no <task>/results.json under any of {list(workdirs)}")
    names = [n for n in kinds.task_names() if any(n in f for f in found)]
    lines = ["| Task | Metric | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for n in names:
        some = next(f[n] for f in found if n in f)
        cells = [f"{format_metrics(f[n]['metrics'], f[n].get('metric_scale', 1.0))} "
                 f"({_spread(f[n])})" if n in f else "–"
                 for f in found]
        lines.append(f"| {n} | {metric_label(some['metrics'])} | " + " | ".join(cells) + " |")
    avgs = []
    for f in found:
        avg, _ = metrics.bert_paper_average({k: r["metrics"] for k, r in f.items()})
        avgs.append(f"{100 * avg:.1f}" if avg is not None else "n/a")
    lines.append("| GLUE avg (BERT paper) | | " + " | ".join(avgs) + " |")
    return "\n".join(lines) + "\n"
