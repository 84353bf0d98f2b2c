"""Studies: change the pretraining, measure downstream, in one resumable command.

A study (configs/pretrain.py get_study) is a list of pretraining points and a set of GLUE
transfer modes. run_study, stage by stage:
  1. pretrains every point (sweep.run_sweep: one workdir per point, finished points skipped);
  2. fine-tunes each point's final checkpoint on the task set in every mode, and the
     random-init baseline once per model shape (glue.grid.run: finished runs are cached in
     their workdirs, so a rerun only does what is missing);
  3. writes study.md / study.csv / study.json (one row per point, one per baseline) and the
     figures (loss curves of all points; downstream average against the swept value).

A study may also have `variants`: some of its points fine-tuned once more with other GLUE
overrides (Table 5's "+ BiLSTM": the LTR point with head=bilstm), each a row of its own after its
point's, `<point> <label>`, with the same column names as the point's row (so it sits beside the
paper's row of the same name). A variant is {"name", "label", "points": [point overrides],
"modes": {study mode: GLUE overrides}}; its runs go to <workdir>/<point>/glue_<mode>_<name>/.
Random-init baselines are not repeated for a variant (the paper's row is of a pretrained model).

Layout: <workdir>/<point>/ (pretraining) and <workdir>/<point>/glue_<mode>/ (its GLUE runs);
<workdir>/random_init/<shape>/glue_<mode>/ (baselines; another directory can be shared by
several studies).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from bertjax import dir_lock, paper_tables, records, sweep

log = logging.getLogger("bertjax.study")

PRETRAIN_COLUMNS = ("step", "mlm_loss", "mlm_accuracy", "mlm_perplexity", "nsp_accuracy",
                    "context_nats", "escape_step")
BUDGET_COLUMNS = ("budget_minutes_used", "budget_flops_used", "stopped_by_budget")


def _average_keys(task: str) -> list[str]:
    """The task's scores as the BERT paper reports them (MRPC F1, STS-B Spearman, SQuAD F1,
    ...): what the study's average counts."""
    from bertjax.finetune import kinds
    from bertjax.finetune.glue import metrics
    return ([k for t, k in metrics.BERT_PAPER_AVERAGE if t == task]
            or [kinds.find(task)[1].primary])  # WNLI (left out of the paper's), SQuAD: F1


class _Progress:
    """Which stage runs, and an ETA from the mean time of the stages of the same kind that
    ran (stages found finished cost nothing and are not timed)."""

    def __init__(self, total: Mapping[str, int]):
        self.total = dict(total)
        self.done = {k: 0 for k in total}
        self.timed = {k: [] for k in total}
        self._t0, self._kind = 0.0, ""

    def start(self, kind: str, what: str):
        self._t0, self._kind = time.perf_counter(), kind
        eta = self.eta()
        log.info("study stage %d/%d: %s %s%s", sum(self.done.values()) + 1,
                 sum(self.total.values()), kind, what,
                 f" (ETA of the rest: {eta / 60:.1f} min)" if eta is not None else "")

    def finish(self, cached: bool = False):
        self.done[self._kind] += 1
        if not cached:
            self.timed[self._kind].append(time.perf_counter() - self._t0)

    def eta(self) -> float | None:
        left = 0.0
        for kind, n in self.total.items():
            if self.done[kind] < n:
                if not self.timed[kind]:
                    return None
                left += float(np.mean(self.timed[kind])) * (n - self.done[kind])
        return left


def check_study(study: Mapping, config, glue_config, glue_dir: str, tasks: Sequence[str]):
    """Everything cheap to check, before any pretraining starts."""
    from bertjax.finetune import grid, kinds
    if not study.get("points"):
        raise ValueError("the study has no points")
    if not study.get("modes"):
        raise ValueError("the study has no GLUE modes")
    if study.get("needs_budget") and not (config.train.budget_minutes
                                          or config.train.budget_flops):
        raise ValueError("this study compares points at an equal compute budget: set "
                         "--config.train.budget_minutes or --config.train.budget_flops (> 0)")
    if not tasks:
        raise ValueError("no tasks given; expected e.g. --tasks=CoLA,SST-2,SQuAD")
    for t in tasks:
        kind, spec = kinds.find(t)  # an unknown name is an error naming the known ones
        missing = kind.files_missing(spec, glue_dir, _glue_config(glue_config, t, {}))
        if missing:
            raise FileNotFoundError(f"{kind.family}{spec.name}: missing {missing} (--glue_dir "
                                    f"{glue_dir})")
    for label, overrides in study["modes"].items():
        for t in tasks:
            grid.validate_config(_glue_config(glue_config, t, overrides))
    _check_variants(study, glue_config, tasks)
    for p in study["points"]:
        sweep.apply_overrides(config, p)  # an unknown field fails here, not after point 1


def _check_variants(study: Mapping, glue_config, tasks: Sequence[str]) -> None:
    from bertjax.finetune import grid
    variants = study.get("variants") or []
    if variants and study.get("per_checkpoint"):
        raise ValueError("a per-checkpoint study (steps) takes no variants")
    for v in variants:
        where = f"study variant {v.get('name')!r}"
        missing = {"name", "label", "points", "modes"} - set(v)
        if missing:
            raise ValueError(f"{where}: missing {sorted(missing)}; expected name, label, "
                             "points (a list of the study's points) and modes")
        stray = [p for p in v["points"] if p not in study["points"]]
        unknown = sorted(set(v["modes"]) - set(study["modes"]))
        if stray or unknown:
            raise ValueError(f"{where}: " + (f"points {stray} are not the study's points"
                             if stray else f"modes {unknown} are not the study's modes "
                             f"{sorted(study['modes'])}"))
        for overrides in v["modes"].values():
            for t in tasks:
                grid.validate_config(_glue_config(glue_config, t, overrides))


def variants_of(study: Mapping, point: Mapping, modes: Mapping) -> list[dict]:
    """The study's variants that fine-tune `point` again, each with its modes among `modes`
    (a study run with only some of its modes runs only those of its variants)."""
    out = []
    for v in study.get("variants") or []:
        kept = {k: o for k, o in v["modes"].items() if k in modes}
        if point in v["points"] and kept:
            out.append(dict(v, modes=kept))
    return out


def _glue_config(glue_config, task: str, overrides: Mapping):
    """The study's fine-tuning config for one task. SQuAD and CoNLL-2003 take their own fields
    (windows, decoding, heads; the tiny sizes when the study's config has sequences of at most
    128 tokens) from their kind's config_fields; model, learning rates, batch sizes, epochs,
    seeds and subsampling stay the study's."""
    from bertjax.finetune import kinds
    from bertjax.finetune.ner import kind as ner_kind
    from bertjax.finetune.squad import kind as squad_kind
    c = ml_collections.ConfigDict(glue_config.to_dict())
    kind, spec = kinds.find(task)
    c.task = spec.name
    fields = {kinds.SQUAD: squad_kind.config_fields, kinds.NER: ner_kind.config_fields}
    if kind in fields:  # the task's own fields, at the study's scale
        c.update(fields[kind](tiny=glue_config.max_seq_length <= 128))
        if "source" in c:
            del c["source"]
    for k, v in overrides.items():
        c[k] = v
    return c


def _shape(point_cfg) -> tuple[str, dict]:
    """A model shape (architecture + tokenizer): -> (directory name, the model dict)."""
    model = point_cfg.model.to_dict()
    key = json.dumps({"model": model, "tokenizer": point_cfg.data.tokenizer}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return f"{model.get('size') or 'custom'}-{digest}", model


def _run_glue(glue_config, glue_dir, tasks, modes, init_checkpoint, workdir: pathlib.Path,
              tokenizer, progress, label, model: dict | None = None, suffix: str = "") -> dict:
    """mode -> task -> results.json of that task (median over seeds at the chosen point);
    the runs in <workdir>/glue_<mode><suffix>/."""
    from bertjax.finetune import grid
    out = {}
    for mode, overrides in modes.items():
        out[mode] = {}
        for task in tasks:
            cfg = _glue_config(glue_config, task, overrides)
            if model is not None:  # random init: the pretraining point's shape
                runtime = {k: cfg.model[k] for k in ("hidden_dropout_rate",
                                                     "attention_dropout_rate",
                                                     "attention_impl", "dtype", "remat")}
                cfg.model = ml_collections.ConfigDict(dict(model, **runtime))
            gdir = workdir / f"glue_{mode}{suffix}"
            results_path = gdir / cfg.task / "results.json"
            cached = results_path.exists()
            progress.start("fine-tuning", f"{label} / {mode} / {cfg.task}")
            grid.run(cfg, glue_dir, init_checkpoint, str(gdir), tokenizer)
            progress.finish(cached)
            out[mode][cfg.task] = json.loads(results_path.read_text())
    return out


def _glue_columns(glue: Mapping, modes: Sequence[str], tasks: Sequence[str],
                  prefix: bool | None = None) -> dict:
    """Each dev metric (x100; SQuAD's EM/F1 are 0-100 already), the average of the tasks'
    paper scores, the seeds' spread (mean over tasks of max - min of the selection metric over
    the chosen point's seeds). Column names carry `<mode>:` when `prefix` (default: the
    study has several modes)."""
    row = {}
    prefix = len(modes) > 1 if prefix is None else prefix
    for mode in modes:
        pre = f"{mode}:" if prefix else ""
        scores, spreads = [], []
        for task in tasks:
            r = glue[mode][task]
            scale = r.get("metric_scale", 1.0)  # 100 for SQuAD, whose scores are 0-100
            for k, v in r["metrics"].items():
                row[f"{pre}{task} {k}"] = 100 * v / scale
            scores += [r["metrics"][k] / scale for k in _average_keys(task)
                       if k in r["metrics"]]
            sel = r["selected"]
            vals = [x["dev"][r["primary"]] / scale for x in r["runs"]
                    if x["learning_rate"] == sel["learning_rate"]
                    and x["batch_size"] == sel["batch_size"]]
            spreads.append(max(vals) - min(vals))
        row[f"{pre}avg"] = 100 * float(np.mean(scores)) if scores else None
        row[f"{pre}seed spread"] = 100 * float(np.mean(spreads))
    return row


def eval_columns(ev: Mapping) -> dict:
    """The held-out pretraining metrics of a row (MLM's, or LTR's next-token loss)."""
    row = {"mlm_loss": ev.get("mlm_loss"), "mlm_accuracy": ev.get("mlm_accuracy"),
           "mlm_perplexity": math.exp(ev["mlm_loss"]) if "mlm_loss" in ev else None,
           "nsp_accuracy": ev.get("nsp_accuracy"), "context_nats": ev.get("context_nats")}
    if "ltr_loss" in ev:
        row.update(ltr_loss=ev["ltr_loss"], ltr_perplexity=ev.get("ltr_perplexity"))
    return row


def _swept(overrides: Mapping) -> dict:
    if "model.size" in overrides:  # a size point: its shape columns (Table 6)
        keys = [k for k in overrides if k != "model.intermediate_size"]
    else:
        keys = list(overrides)
    return {k.split(".")[-1]: overrides[k] for k in keys}


@dir_lock.locked("workdir", "study")
def run_study(name: str, study: Mapping, config, glue_config, glue_dir: str, workdir: str,
              tasks: Sequence[str], *, points: Sequence[str] = (),
              baselines_dir: str = "", baselines_only: bool = False,
              train_fn: Callable | None = None, steps: Sequence[int] = ()) -> dict:
    """Runs (or resumes) the study; returns what study.json holds. Random-init baselines go
    to `baselines_dir` (default <workdir>/random_init): studies given the same directory share
    them (a baseline depends only on the model shape, tokenizer and GLUE config, all of which
    are in its cache key). `baselines_only` runs just the baselines (e.g. in a second process
    while the points pretrain; the study then finds them done) and writes no report.
    `steps`: for a per-checkpoint study (`steps`), the checkpoints to fine-tune (default all
    the run keeps)."""
    from bertjax import study_steps
    config = sweep.apply_overrides(config, study.get("fixed", {}))  # the study's own settings
    check_study(study, config, glue_config, glue_dir, tasks)
    study_steps.check_steps(study, config, steps)
    all_points = list(study["points"])
    if points:  # a subset, e.g. the sizes a CPU can afford
        names = [sweep.point_name(p) for p in all_points]
        unknown = sorted(set(points) - set(names))
        if unknown:
            raise ValueError(f"--points {unknown}: not in study {name!r}; its points are "
                             f"{names}")
        all_points = [p for p, n in zip(all_points, names) if n in points]
    root = pathlib.Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    base_root = pathlib.Path(baselines_dir) if baselines_dir else root / "random_init"
    modes = dict(study["modes"])
    cfgs = [(sweep.point_name(p), p, sweep.apply_overrides(config, p)) for p in all_points]
    shapes = {}
    for _, _, cfg in cfgs:
        shape, model = _shape(cfg)
        shapes.setdefault(shape, (model, cfg.data.tokenizer))
    n_ft = (len(cfgs) + len(shapes)) * len(modes) * len(tasks) + len(tasks) * sum(
        len(v["modes"]) for _, p, _ in cfgs for v in variants_of(study, p, modes))
    progress = _Progress({"pretraining": len(cfgs), "fine-tuning": n_ft})

    if baselines_only:
        progress = _Progress({"fine-tuning": len(shapes) * len(modes) * len(tasks)})
        for shape, (model, tokenizer) in shapes.items():
            _run_glue(glue_config, glue_dir, tasks, modes, "", base_root / shape, tokenizer,
                      progress, f"random init ({shape})", model=model)
        return {}

    # --- 1. Pretraining.
    def train_point(cfg, point_dir):
        progress.start("pretraining", pathlib.Path(point_dir).name)
        if train_fn is None:
            from bertjax import train
            out = train.train_and_evaluate(cfg, point_dir)
        else:
            out = train_fn(cfg, point_dir)
        progress.finish()
        return out

    done = sweep.run_sweep(config, all_points, str(root), train_fn=train_point)
    if len(done) < len(cfgs):  # preempted: the next run resumes that point
        log.warning("study %s: pretraining stopped early (preempted); run again to resume", name)
        return {}
    progress.done["pretraining"] = len(cfgs)  # the rest were finished earlier
    by_name = {r["point"]: r for r in done}

    # --- 2. GLUE: every point (each kept checkpoint of it, in a per-checkpoint study), then
    # each shape's random-init baseline.
    def glue_columns(init: str, gdir: pathlib.Path, label: str, run_modes=modes,
                     suffix: str = "") -> dict:
        glue = _run_glue(glue_config, glue_dir, tasks, run_modes, init, gdir, "", progress,
                         label, suffix=suffix)
        # Named as the study's modes (a variant's columns are its point's).
        return _glue_columns(glue, list(run_modes), tasks, prefix=len(modes) > 1)

    rows = []
    if study.get("per_checkpoint"):
        rows = study_steps.checkpoint_rows(cfgs, root, steps, progress, glue_columns,
                                           runs_per_init=len(modes) * len(tasks),
                                           baseline_runs=len(shapes) * len(modes) * len(tasks))
    for n, overrides, cfg in ([] if study.get("per_checkpoint") else cfgs):
        r = by_name[n]
        row = {"point": n, "init": "pretrained", **_swept(overrides), "step": r["step"],
               **eval_columns(r.get("eval") or {}), "escape_step": r.get("escape_step")}
        if cfg.train.budget_minutes or cfg.train.budget_flops:
            b = r.get("budget") or {}
            row.update(budget_minutes_used=b.get("minutes"), budget_flops_used=b.get("flops"),
                       stopped_by_budget=b.get("stopped_by_budget"))
        rows.append(dict(row, **glue_columns(str(root / n), root / n, n)))
        for v in variants_of(study, overrides, modes):  # e.g. Table 5's "+ BiLSTM"
            rows.append(dict(row, point=f"{n} {v['label']}", **glue_columns(
                str(root / n), root / n, f"{n} {v['label']}", v["modes"], f"_{v['name']}")))
    for shape, (model, tokenizer) in shapes.items():
        label = f"random init ({shape})"
        glue = _run_glue(glue_config, glue_dir, tasks, modes, "", base_root / shape,
                         tokenizer, progress, label, model=model)
        swept = ({k: model[k] for k in ("size", "num_layers", "hidden_size", "num_heads")}
                 if "model.size" in cfgs[0][1] else {})
        rows.append({"point": label, "init": "random", **swept,
                     **_glue_columns(glue, list(modes), tasks)})

    # --- 3. Tables and figures.
    return _report(name, study, rows, root, cfgs, tasks, modes, config, glue_config)


def _report(name, study, rows, root, cfgs, tasks, modes, config, glue_config) -> dict:
    """study.md/.csv (the measured rows, then the paper's own where the study mirrors a paper
    table), the figures and study.json; -> what study.json holds."""
    from bertjax import study_steps
    reference, source = paper_tables.reference_rows(name, list(modes))
    header, table = paper_tables.table_rows(rows, reference)
    title = (f"Study {name}: tasks {', '.join(tasks)}; modes {', '.join(modes)}; GLUE dev "
             "metrics x100, median over seeds; avg = mean of the tasks' BERT-paper scores; "
             "seed spread = mean over tasks of max-min of the selection metric")
    if reference:
        title += (f". Rows 'paper: ...' ({reference[0]['init']}) are {source}, not measured "
                  f"here; '{paper_tables.NOT_RUN}' = a task or mode this study did not run")
    records.write_table(root / "study", header, table, title=title)
    figures = write_figures(root, name, rows, [(n, p) for n, p, _ in cfgs], list(modes))
    if study.get("per_checkpoint"):  # downstream against pretraining steps instead
        study_steps.write_figure(root, name, rows, list(modes))
    out = {"study": name, "tasks": list(tasks), "modes": modes, "columns": header,
           "rows": rows, "reference_rows": reference, "reference_source": source,
           "figures": figures, "config": json.loads(config.to_json()),
           "glue_config": glue_config.to_dict()}
    records.write_json(root / "study.json", out)
    log.info("study %s: %d rows in %s/study.md; figures %s", name, len(rows), root,
             ", ".join(figures))
    return out


def _x_label(overrides: Mapping) -> str:
    sw = _swept(overrides)
    if "size" in sw:
        return str(sw["size"])
    return ",".join(f"{v}" for v in sw.values()) or "base"


def write_figures(root: pathlib.Path, name: str, rows: Sequence[Mapping],
                  points: Sequence[tuple[str, Mapping]], modes: Sequence[str]) -> list[str]:
    """loss_curves.{png,svg} (training MLM loss of every point; held-out as markers) and
    downstream.{png,svg} (GLUE average per mode against the swept value; random init dashed)."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n, _ in points:
        path = root / n / "metrics.jsonl"
        if not path.exists():
            continue
        train, ev = [], []
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if "mlm_loss" in r:
                (ev if r.get("split") == "eval" else train).append((r["step"], r["mlm_loss"]))
        if train:
            line, = ax.plot(*zip(*train), label=n, lw=1.2)
            if ev:
                ax.plot(*zip(*ev), "o", color=line.get_color(), ms=4)
    ax.set(xlabel="step", ylabel="MLM loss (lines: train, dots: held-out)",
           title=f"study {name}: pretraining")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    written += _save(fig, root / "loss_curves")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = [_x_label(p) for _, p in points]
    xs = np.arange(len(labels))
    pre = {r["point"]: r for r in rows if r["init"] == "pretrained"}
    rand = [r for r in rows if r["init"] == "random"]
    for mode in modes:
        key = f"{mode}:avg" if len(modes) > 1 else "avg"
        ys = [pre[n].get(key) if n in pre else None for n, _ in points]
        ys = [np.nan if y is None else y for y in ys]
        line, = ax.plot(xs, ys, "o-", label=f"pretrained, {mode}")
        for r in rand:
            if r.get(key) is not None:
                ax.axhline(r[key], ls="--", lw=1, color=line.get_color(),
                           label=f"{r['point']}, {mode}" if len(rand) > 1 else
                           f"random init, {mode}")
    ax.set_xticks(xs, labels, rotation=20 if max(map(len, labels)) > 6 else 0, fontsize=8)
    ax.set(xlabel="swept value", ylabel="GLUE dev average (x100)",
           title=f"study {name}: downstream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    written += _save(fig, root / "downstream")
    plt.close(fig)
    return written


def _save(fig, stem: pathlib.Path) -> list[str]:
    out = []
    for ext in ("png", "svg"):
        path = stem.with_name(f"{stem.name}.{ext}")
        tmp = path.with_name(f"{path.stem}.tmp.{ext}")  # atomic: an old figure stays whole
        fig.savefig(tmp, dpi=120)
        tmp.replace(path)
        out.append(path.name)
    return out
