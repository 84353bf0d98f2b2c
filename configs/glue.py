"""GLUE fine-tuning configs under their old name: `--config configs/glue.py:<task>[,preset...]`
is `configs/finetune.py:<task>[,preset...]` for the GLUE tasks (and `all`); see that file for
every field and preset."""
import importlib.util
import pathlib

_spec = importlib.util.spec_from_file_location(
    "bertjax_configs_finetune", pathlib.Path(__file__).with_name("finetune.py"))
_finetune = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_finetune)


def get_config(arg: str = "SST-2"):
    return _finetune.get_config(arg, where="configs/glue.py", known=_finetune.TASK_NAMES)
