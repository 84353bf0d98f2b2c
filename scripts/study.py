"""Run a study: pretrain each point, fine-tune each checkpoint on GLUE (and random init once per
model shape), write study.md/.csv/.json and figures.

    python scripts/study.py --config configs/pretrain.py:tiny --study transfer \
        --workdir runs/study_transfer --glue_dir ../shared/data/glue --tasks CoLA,SST-2,MRPC,STS-B

Studies are named in configs/pretrain.py (get_study): mask_mix, mask_rate, nsp, size,
transfer, budget, pretraining_tasks, steps (each kept checkpoint fine-tuned; `--steps` picks
some). Running the same command again skips finished pretraining and GLUE runs.
`--glue_config` picks the fine-tuning recipe (any configs/glue.py preset; the task part is
replaced by each of --tasks), overridable as `--glue_config.num_seeds=3`.
"""
import importlib.util
import logging
import os

from absl import flags
from absl import logging as absl_logging
from ml_collections import config_flags

from bertjax import cli, study

_CONFIG = config_flags.DEFINE_config_file("config", None, "Pretraining config (path:variant).",
                                          lock_config=True)
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GLUE_CONFIG = config_flags.DEFINE_config_file(
    "glue_config", os.path.join(_REPO, "configs", "glue.py") + ":all,tiny",
    "GLUE fine-tuning config (path:task,presets).", lock_config=True)
_STUDY = flags.DEFINE_string("study", None, "Name passed to the config file's get_study().")
_WORKDIR = flags.DEFINE_string("workdir", None, "Parent directory of the study's runs.")
_GLUE_DIR = flags.DEFINE_string("glue_dir", None, "GLUE data: <glue_dir>/<task>/*.tsv")
_TASKS = flags.DEFINE_list("tasks", ["CoLA", "SST-2", "MRPC", "STS-B"], "GLUE tasks.")
_POINTS = flags.DEFINE_list("points", [], "Only these points of the study (names as in its "
                            "workdir, e.g. size=tiny,size=mini); default all.")
_MODES = flags.DEFINE_list("modes", [], "Only these GLUE modes of the study (full, feature, "
                           "partial); default all of the study's.")
_BASELINES = flags.DEFINE_string("baselines_dir", "", "Where random-init baselines go (default "
                                 "<workdir>/random_init); share one between studies to run "
                                 "each model shape's baseline once.")
_BASELINES_ONLY = flags.DEFINE_bool("baselines_only", False, "Run only the random-init baselines "
                                    "(e.g. in a second process while the points pretrain).")
_STEPS = flags.DEFINE_list("steps", [], "The `steps` study: only these kept checkpoints "
                           "(e.g. 2000,4000); default every one the run keeps.")
flags.mark_flags_as_required(["config", "study", "workdir", "glue_dir"])


def main(argv):
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("bertjax").setLevel(logging.INFO)
    path = flags.FLAGS["config"].config_filename
    if not os.path.exists(path):  # 'file.py:variant' as given; the module is the file part
        path = path.split(":")[0]
    spec = importlib.util.spec_from_file_location("study_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_study"):
        raise ValueError(f"{path} defines no get_study(name)")
    s = module.get_study(_STUDY.value)
    if _MODES.value:
        unknown = sorted(set(_MODES.value) - set(s["modes"]))
        if unknown:
            raise ValueError(f"--modes {unknown}: study {_STUDY.value!r} has modes "
                             f"{sorted(s['modes'])}")
        s = dict(s, modes={k: v for k, v in s["modes"].items() if k in _MODES.value})
    try:
        steps = [int(x) for x in _STEPS.value]
    except ValueError:
        raise ValueError(f"--steps {_STEPS.value}: expected whole numbers (training steps)"
                         ) from None
    config = _CONFIG.value
    for key in ("corpus", "prepared_dir"):
        config.data[key] = cli.user_path(config.data[key])
    config.data.tokenizer = cli.repo_file(config.data.tokenizer)
    out = study.run_study(_STUDY.value, s, config, _GLUE_CONFIG.value,
                          cli.user_path(_GLUE_DIR.value), cli.user_path(_WORKDIR.value),
                          _TASKS.value, points=_POINTS.value,
                          baselines_dir=cli.user_path(_BASELINES.value),
                          baselines_only=_BASELINES_ONLY.value, steps=steps)
    if out:
        print(open(f"{cli.user_path(_WORKDIR.value)}/study.md", encoding="utf-8").read())


if __name__ == "__main__":
    cli.run(main)
