import json

import pytest

from bertjax import workdir
from configs import pretrain

MUST_MATCH = ("model", "data.nsp", "data.packing")


def _write_old(tmp_path, config, drop=()):
    old = json.loads(config.to_json())
    for key in drop:
        section, field = key.split(".")
        del old[section][field]
    (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps(old))


def test_option_added_since_the_run_started_is_not_a_difference(tmp_path):
    config = pretrain.get_config("tiny")
    _write_old(tmp_path, config, drop=["data.packing"])  # a run from before data.packing
    workdir.check_same_experiment(tmp_path, config, MUST_MATCH)


def test_a_changed_value_is_still_refused(tmp_path):
    config = pretrain.get_config("tiny")
    _write_old(tmp_path, config, drop=["data.packing"])
    config.data.nsp = False
    with pytest.raises(ValueError, match=r"data.nsp: True -> False"):
        workdir.check_same_experiment(tmp_path, config, MUST_MATCH)
