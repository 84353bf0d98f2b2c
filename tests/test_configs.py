import pytest

from bertjax.models import bert
from configs import pretrain


@pytest.mark.parametrize("arg", ["tiny", "mini", "small", "medium", "base", "large",
                                 "base,gpu", "large,bert_recipe,tpu", "mini,no_nsp,position_learned"])
def test_pretrain_configs_build_a_valid_model_config(arg):
    c = pretrain.get_config(arg)
    cfg = bert.BertConfig.from_dict(c.model.to_dict())
    assert cfg.size == arg.split(",")[0]
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads) == bert.SIZES[cfg.size]
    assert cfg.intermediate_size == 4 * cfg.hidden_size


def test_unknown_preset_and_size_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown preset 'gpux'"):
        pretrain.get_config("base,gpux")
    with pytest.raises(ValueError, match="unknown model size 'gigantic'"):
        pretrain.get_config("gigantic")
