import pytest

from bertjax.models import bert
from configs import pretrain


@pytest.mark.parametrize("arg", ["tiny", "mini", "small", "medium", "base", "large",
                                 "base,gpu", "large,bert_recipe,tpu", "mini,no_nsp,position_learned",
                                 "tiny,cpu_transfer", "mini,cpu_transfer"])
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


@pytest.mark.parametrize("size", ["tiny", "mini"])
def test_cpu_transfer_preset_tokenizer_matches_vocab_and_init_scales_with_width(size):
    from bertjax import cli
    from bertjax.data import tokenizer as tokenizer_lib
    c = pretrain.get_config(f"{size},cpu_transfer")
    tok = tokenizer_lib.load(cli.repo_file(c.data.tokenizer))
    tokenizer_lib.check_matches_model(tok, c.model.vocab_size)
    assert tok.vocab_size == c.model.vocab_size == 8192
    # 1/sqrt(hidden): 0.088 for tiny (hidden 128), 0.0625 for mini (hidden 256)
    assert c.model.initializer_range == pytest.approx(c.model.hidden_size ** -0.5)
    assert c.model.pre_layer_norm and c.train.budget_minutes == 60.0


@pytest.mark.parametrize("size", ["tiny", "mini"])
def test_cpu_escape_preset_is_cpu_transfer_with_its_departures(size):
    base, c = pretrain.get_config(f"{size},cpu_transfer"), pretrain.get_config(f"{size},cpu_escape")
    assert c.model.num_heads * 32 == c.model.hidden_size  # head_dim 32 (4 heads for tiny)
    assert not c.data.nsp and c.data.mask_rate == 0.25 and c.data.max_predictions_per_seq == 32
    assert c.train.eval_every == 250
    changed = {f"{k}.{f}" for k in ("model", "data", "optim", "train", "parallel")
               for f in c[k] if c[k][f] != base[k][f]}
    assert changed == {"model.num_heads", "data.nsp", "data.mask_rate",
                       "data.max_predictions_per_seq", "train.eval_every"}
    bert.BertConfig.from_dict(c.model.to_dict())
    from bertjax import train
    train.check_config(c)
