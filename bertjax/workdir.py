"""One experiment per workdir: the config a workdir's run was started with, and the check that
a later run in the same workdir (a resume) is the same experiment.

Pretraining keeps its config in `<workdir>/config.json`; resuming with different values for the
keys that define the experiment would silently mix two runs, so it is refused, with the list of
differing keys, before anything is written. Its own module because the rule is about the
workdir, not the training loop: any run that resumes in a workdir can apply it.
"""
from __future__ import annotations

import json
from typing import Sequence

import ml_collections
from etils import epath
from flax import traverse_util

from bertjax import records

CONFIG_FILE = "config.json"


def _flat(config: dict) -> dict:
    return traverse_util.flatten_dict(config, sep=".")


def check_same_experiment(workdir, config: ml_collections.ConfigDict,
                          must_match: Sequence[str]) -> None:
    """Raises ValueError when `workdir` holds a run whose config differs from `config` at a key
    starting with one of `must_match` (dotted prefixes such as 'model' or 'data.nsp').

    A field that did not exist yet when the run started (a config option added since) is not a
    difference: new options default to the behaviour they were added beside."""
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        return
    old = _flat(json.loads(path.read_text()))
    new = _flat(json.loads(config.to_json()))
    diffs = [k for k in sorted(old)
             if k.startswith(tuple(must_match)) and old.get(k) != new.get(k)]
    if diffs:
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diffs)
        raise ValueError(
            f"workdir {workdir} holds a run with a different config ({detail}). Use a new "
            "--workdir, or restore the original values; nothing was overwritten.")


def save_config(workdir, config: ml_collections.ConfigDict) -> None:
    """Records the config of the run that starts in `workdir` (kept when it resumes)."""
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        records.write_json(path, json.loads(config.to_json()), indent=2)
