"""Run a named ablation sweep from the config file's get_sweep():

    python scripts/sweep.py --config configs/pretrain.py:tiny --sweep mask_rate \
        --workdir runs/sweep_mask_rate [--config.train.steps=2000]

One sub-workdir per point; finished points are skipped on re-runs; summary.md/.csv at the end.
"""
import importlib.util
import logging

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from bertjax import cli, sweep

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path:variant).",
                                          lock_config=True)
_SWEEP = flags.DEFINE_string("sweep", None, "Name passed to the config file's get_sweep().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the points' workdirs.")
_POINTS = flags.DEFINE_list("points", None, "Only these points of the sweep, by index from 0 "
                            "(e.g. 0,2: two processes can share a sweep's points).")
flags.mark_flags_as_required(["config", "sweep", "workdir"])


def main(argv):
    del argv
    # Our progress and results at INFO; the libraries' (Orbax, TFDS) INFO chatter hidden.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("bertjax").setLevel(logging.INFO)
    # config_filename is what was typed, "path:variant"; ml_collections splits at the first ':'.
    path = flags.FLAGS["config"].config_filename.split(":", 1)[0]
    spec = importlib.util.spec_from_file_location("sweep_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path} defines no get_sweep(name)")
    config = _CONFIG.value
    cli.resolve_data_paths(config.data)
    workdir = cli.user_path(_WORKDIR.value)
    points = module.get_sweep(_SWEEP.value)
    if _POINTS.value:
        points = sweep.select_points(points, _POINTS.value, _SWEEP.value)
    results = sweep.run_sweep(config, points, workdir)
    logging.getLogger("bertjax").info("sweep %s: %d points done; summary in %s/summary.md",
                                      _SWEEP.value, len(results), workdir)


if __name__ == "__main__":
    cli.run(main)
