"""The clocks of a pretraining run: its compute budget and its step timing.

Budget: what the run has used across restarts (`<workdir>/budget.json`: minutes inside the
training loop and model FLOPs), against `train.budget_minutes` / `train.budget_flops`; a run
stops at the first step that reaches either. With several processes and a minutes budget,
process 0 decides (clocks differ between hosts), so every process stops at the same step.

check_finite and train_figures: what every train log checks and reports.

StepClock: the first step compiles and is timed apart (`compile_time_s`); after that, steps are
timed in windows between train logs; evaluation restarts the window, so its time is not
counted as training time.
"""
from __future__ import annotations

import json
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from bertjax import metrics as metrics_lib, records


class Budget:
    def __init__(self, train_config, path):
        self.minutes_limit = train_config.budget_minutes
        self.flops_limit = train_config.budget_flops
        self.path = path
        self.used = (json.loads(path.read_text()) if path.exists()
                     else {"minutes": 0.0, "flops": 0.0})
        self._minutes_before, self._start = self.used["minutes"], time.perf_counter()

    def spent(self) -> bool:
        return bool((self.minutes_limit and self.used["minutes"] >= self.minutes_limit)
                    or (self.flops_limit and self.used["flops"] >= self.flops_limit))

    def add_step(self, flops: float) -> bool:
        """Counts one step; -> whether the budget is now spent (the same on every process)."""
        self.used["flops"] += flops
        self.used["minutes"] = self._minutes_before + (time.perf_counter() - self._start) / 60
        over = self.spent()
        if self.minutes_limit and jax.process_count() > 1:
            over = bool(multihost_utils.broadcast_one_to_all(np.bool_(over)))
        return over

    def save(self, step: int, over: bool) -> None:
        records.write_json(self.path, dict(self.used, step=step, stopped_by_budget=over))

    def summary(self) -> dict:
        return dict(self.used, stopped_by_budget=self.spent())


class StepClock:
    def __init__(self):
        self.compile_s = None
        self.window_start, self.window_steps = None, 0

    def stepped(self, out, t0: float) -> float | None:
        """After a step that started at t0: -> the compile time if this was the first step."""
        if self.compile_s is None:
            jax.block_until_ready(out)
            self.compile_s = time.perf_counter() - t0
            self.restart()
            return self.compile_s
        self.window_steps += 1
        return None

    def take(self) -> tuple[int, float]:
        """(steps, seconds) of the window so far; a new window starts."""
        now = time.perf_counter()
        steps, seconds = self.window_steps, now - self.window_start
        self.window_start, self.window_steps = now, 0
        return steps, seconds

    def restart(self) -> None:
        """A new window from now, keeping its step count (after an evaluation)."""
        self.window_start = time.perf_counter()


def check_finite(host_metrics: list, first_step: int, ckpts) -> None:
    """Stops the run at the first logged step with a non-finite loss or gradient norm."""
    for i, m in enumerate(host_metrics):
        bad = [k for k in ("mlm_loss_sum", "ltr_loss_sum", "nsp_loss_sum", "grad_norm")
               if k in m and not np.isfinite(m[k])]
        if bad:
            raise FloatingPointError(
                f"non-finite {', '.join(bad)} at step {first_step + i}; stopping. The last good "
                f"checkpoint (step {ckpts.last_complete}) in {ckpts.directory} is kept; try a "
                "lower learning rate or more warmup.")


def train_figures(host: list, steps_timed: int, seconds: float, config, phase, model_cfg, peak,
                  objective, summarize) -> dict:
    """A train log row from the host metrics of the steps since the last one: the objective's
    losses and accuracies (`summarize`), and the window's speed (seq/s, tokens/s, MFU, and the
    same over real tokens only)."""
    total = {k: np.sum([m[k] for m in host]) for k in host[0] if k.endswith(("_sum", "_correct",
                                                                             "_count"))}
    out = summarize(total, objective)
    out["grad_norm"] = float(host[-1]["grad_norm"])
    out["learning_rate"] = float(host[-1]["learning_rate"])
    if steps_timed > 0 and seconds > 0:
        step_s = seconds / steps_timed
        seq_s = config.train.batch_size / step_s
        flops = metrics_lib.pretraining_flops_per_sequence(
            model_cfg, phase.seq_len, phase.max_predictions) * seq_s
        out.update(step_time_s=step_s, seq_per_s=seq_s, tokens_per_s=seq_s * phase.seq_len,
                   mfu=(flops / (peak * jax.device_count())) if peak else None)
        # Padding costs FLOPs but is no work: the same figures over real tokens only (the
        # counters cover every logged step; the timing only the steps after compilation).
        n = len(host)
        out.update(metrics_lib.real_token_figures(
            model_cfg, seq_len=phase.seq_len, rows=n * config.train.batch_size, seconds=n * step_s,
            real_tokens=total["real_token_count"],
            predictions=total[objective.head + "_count"],
            pairs=total.get("nsp_count", 0.0), peak=peak, devices=jax.device_count()))
    return out
