"""Run a sweep of config overrides, one workdir per point, resumable.

Each point runs train.train_and_evaluate in <workdir>/<point name>. A finished point leaves
result.json there and is skipped when the sweep runs again; an interrupted point resumes from
its own latest checkpoint. The summary (summary.md, summary.csv) is rewritten after each point.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from typing import Callable

import ml_collections

from bertjax import context_probe, dir_lock, records

log = logging.getLogger("bertjax.sweep")
SUMMARY_KEYS = ("mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy", "context_nats")


def point_name(overrides: dict) -> str:
    parts = []
    for k, v in overrides.items():
        if k.startswith("model.") and k != "model.size" and "model.size" in overrides:
            continue  # a size point is named by its size alone
        parts.append(f"{k.split('.')[-1]}={v}")
    return ",".join(parts) or "base"


def select_points(points: list[dict], indices, sweep_name: str) -> list[dict]:
    """The points at `indices` (strings or ints, from 0), in the order given."""
    out = []
    for i in indices:
        if not str(i).strip().isdigit() or int(i) >= len(points):
            raise ValueError(f"--points {i!r}: expected an index from 0 to {len(points) - 1} "
                             f"(sweep {sweep_name!r} has {len(points)} points)")
        out.append(points[int(i)])
    return out


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict):
    config = copy.deepcopy(config)
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            if p not in node:
                raise KeyError(f"sweep override {key!r}: no config field {p!r}")
            node = node[p]
        if leaf not in node:
            raise KeyError(f"sweep override {key!r}: no config field {leaf!r}")
        node[leaf] = value
    return config


@dir_lock.locked("workdir", "sweep")
def run_sweep(config, points: list[dict], workdir: str,
              train_fn: Callable | None = None) -> list[dict]:
    if train_fn is None:
        from bertjax import train
        train_fn = train.train_and_evaluate
    configs = [(point_name(p), p, apply_overrides(config, p)) for p in points]
    names = [n for n, _, _ in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"sweep points must have distinct names, got {names}")
    results = []
    os.makedirs(workdir, exist_ok=True)
    for name, overrides, cfg in configs:
        point_dir = os.path.join(workdir, name)
        result_path = os.path.join(point_dir, "result.json")
        if os.path.exists(result_path):
            log.info("sweep point %s: done already, skipped", name)
            with open(result_path, encoding="utf-8") as f:
                results.append(json.load(f))
            continue
        log.info("sweep point %s: %s", name, overrides)
        out = train_fn(cfg, point_dir)
        row = {"point": name, "overrides": overrides, "step": out.step,
               "train": out.last_train, "eval": out.last_eval,
               "budget": getattr(out, "budget", None),
               "escape_step": context_probe.run_escape_step(point_dir)}
        if out.preempted:  # no result.json: the next run resumes this point
            log.warning("sweep point %s preempted at step %d", name, out.step)
            break
        records.write_json(result_path, row)
        results.append(row)
        write_summary(results, workdir)
    return results


def write_summary(results: list[dict], workdir: str) -> None:
    header = ["point", "step"] + [f"eval_{k}" for k in SUMMARY_KEYS] + ["escape_step"]
    rows = [[r["point"], r["step"]] + [r["eval"].get(k) for k in SUMMARY_KEYS]
            + [r.get("escape_step")] for r in results]
    records.write_table(os.path.join(workdir, "summary"), header, rows)
