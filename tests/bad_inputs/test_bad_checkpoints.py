"""Bad checkpoints when loading: missing, half-written, another model size, not bertjax's, a
Hugging Face directory of another architecture. (Saving - unwritable directory, failing async
save, full disk - is tests/test_checkpoint_robustness.py.)"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from bad_input_helpers import checksums

from bertjax import checkpoint, train
from bertjax import workdir as workdir_lib
from bertjax.convert import hf
from bertjax.data import tokenizer
from bertjax.finetune import pretrained, transfer
from bertjax.models import bert
from configs import glue as glue_config
from configs import pretrain

SMALL = dict(vocab_size=80, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
             max_position_embeddings=64)


def _pretraining_params(cfg: bert.BertConfig) -> dict:
    """BertForPreTraining parameters of the right shapes (zeros: only shapes matter here)."""
    ids = jnp.zeros((1, 8), jnp.int32)
    pos = jnp.zeros((1, 2), jnp.int32)
    shapes = jax.eval_shape(lambda: bert.BertForPreTraining(cfg).init(
        jax.random.PRNGKey(0), ids, ids, ids, pos)["params"])
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def test_missing_checkpoint(tmp_path, small_tokenizers):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint found: .*no_run does not exist; "
                                                r"expected a bertjax pretraining workdir"):
        pretrained.resolve_init(glue_config.get_config("RTE,tiny"), str(tmp_path / "no_run"),
                              str(small_tokenizers[0]))
    assert not (tmp_path / "no_run").exists()  # loading never creates the directory


def test_half_written_step_is_ignored(tmp_path):
    params = {"bert": {"w": np.arange(3, dtype=np.float32)}}
    checkpoint.save_pretrained(str(tmp_path / "ckpt"), params, SMALL, {}, step=2)
    partial = tmp_path / "ckpt" / "7.orbax-checkpoint-tmp"  # a save killed mid-way
    (partial / "params").mkdir(parents=True)
    (partial / "params" / "junk").write_bytes(b"\x00" * 10)
    restored, cfg, _, _ = checkpoint.load_pretrained(str(tmp_path / "ckpt"))
    np.testing.assert_array_equal(restored["bert"]["w"], params["bert"]["w"])
    with checkpoint.make_manager(tmp_path / "ckpt") as mngr:  # what a resumed run asks
        assert mngr.latest_step() == 2 and mngr.all_steps() == [2]


def test_resuming_with_another_model_size_is_refused_and_nothing_changes(tmp_path):
    workdir = tmp_path / "run"
    tiny = pretrain.get_config("tiny")
    workdir.mkdir()
    (workdir / "config.json").write_text(tiny.to_json(indent=2))
    checkpoint.save_pretrained(str(workdir / "checkpoints"), {"bert": {"w": np.ones(2)}}, SMALL,
                               {}, step=100)
    before = checksums(workdir)
    with pytest.raises(ValueError, match=r"workdir .*run holds a run with a different config "
                                         r"\(model.hidden_size: 128 -> 256; model.intermediate_size"
                                         r": 512 -> 1024; .*model.size: 'tiny' -> 'mini'; .*\)"
                                         r". Use a new --workdir, .*nothing was overwritten"):
        workdir_lib.check_same_experiment(workdir, pretrain.get_config("mini"),
                                          train._RESUME_MUST_MATCH)
    assert checksums(workdir) == before


def test_fine_tuning_takes_the_checkpoints_size_and_refuses_params_that_do_not_fit(
        tmp_path, small_tokenizers):
    tok = tokenizer.load(small_tokenizers[0])
    cfg = bert.BertConfig(**SMALL)
    good, bad = tmp_path / "good", tmp_path / "bad"
    checkpoint.save_pretrained(str(good), _pretraining_params(cfg), cfg, tok.identity())
    config = glue_config.get_config("RTE,tiny")  # the tiny size: 128 hidden, 2 layers
    init = pretrained.resolve_init(config, str(good), str(tok.path))
    assert (init.model_config.hidden_size, init.model_config.num_layers) == (16, 1)
    # Parameters of a 32-wide model under metadata that says 16: refused before compiling.
    wider = bert.BertConfig(**dict(SMALL, hidden_size=32, intermediate_size=64))
    checkpoint.save_pretrained(str(bad), _pretraining_params(wider), cfg, tok.identity())
    init = pretrained.resolve_init(config, str(bad), str(tok.path))
    with pytest.raises(ValueError, match=r"checkpoint encoder does not fit the model: differing "
                                         r"keys or shapes"):
        model = transfer.build_model("full", init.model_config, 2,
                                     feature_hidden=config.feature_hidden, feature_dropout=0.0)
        ids = jnp.zeros((1, 8), jnp.int32)
        shapes = jax.eval_shape(lambda r: model.init(r, ids, ids, ids)["params"],
                                jax.random.PRNGKey(0))
        pretrained.check_encoder_fits(shapes, init)


def test_directory_without_checkpoints(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint found under .*notes \(no finished "
                                                r"<step>/ folders\); expected a bertjax"):
        checkpoint.load_pretrained(str(tmp_path / "notes"))


def test_orbax_checkpoint_that_is_not_bertjax(tmp_path):
    with ocp.CheckpointManager(tmp_path / "other") as mngr:
        mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.ones(3)})))
        mngr.wait_until_finished()
    before = checksums(tmp_path / "other")
    with pytest.raises(ValueError, match=r"other/3 is an Orbax checkpoint but not a bertjax one "
                                         r"\(Item \"metadata\" was not found .*\['state'\]\)"):
        checkpoint.load_pretrained(str(tmp_path / "other"))
    assert checksums(tmp_path / "other") == before


def test_hugging_face_directory_given_as_a_checkpoint_points_to_the_converter(tmp_path):
    (tmp_path / "bert-base").mkdir()
    (tmp_path / "bert-base" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(FileNotFoundError, match=r"bert-base looks like a Hugging Face model "
                                                r"directory .*convert_checkpoint.py --from=hf"):
        checkpoint.load_pretrained(str(tmp_path / "bert-base"))


@pytest.mark.parametrize("model_type, architectures", [
    ("roberta", ["RobertaForMaskedLM"]), ("distilbert", ["DistilBertForMaskedLM"]),
    ("gpt2", ["GPT2LMHeadModel"])])
def test_converting_a_hugging_face_model_that_is_not_bert(tmp_path, model_type, architectures):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": model_type,
                                                 "architectures": architectures}))
    with pytest.raises(hf.ConversionError, match=rf"config.json: model_type='{model_type}' "
                                                 rf"\(architectures \['{architectures[0]}'\]\) is "
                                                 rf"not supported; only BERT"):
        hf.import_checkpoint(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_converting_a_directory_whose_config_json_is_not_json(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text("{'model_type': 'bert',")
    with pytest.raises(hf.ConversionError, match=r"src/config.json: not a JSON config \(.*\); "
                                                 r"expected a Hugging Face config.json"):
        hf.import_checkpoint(tmp_path / "src", tmp_path / "out")
