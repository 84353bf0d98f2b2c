"""BiLSTM tagging head: parameter layout, numerics against a numpy LSTM, and padding."""
import jax
import numpy as np
import pytest

from bertjax.models import bert, bilstm


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _lstm(p, xs):
    """numpy reference of OptimizedLSTMCell over xs [steps, features], zero initial state."""
    k = lambda name: np.asarray(p[name]["kernel"], np.float64)  # noqa: E731
    b = lambda name: np.asarray(p[name]["bias"], np.float64)  # noqa: E731
    h = np.zeros(k("hi").shape[0])
    c = np.zeros_like(h)
    out = []
    for x in xs:
        gate = {g: x @ k("i" + g) + h @ k("h" + g) + b("h" + g) for g in "ifgo"}
        c = _sigmoid(gate["f"]) * c + _sigmoid(gate["i"]) * np.tanh(gate["g"])
        h = _sigmoid(gate["o"]) * np.tanh(c)
        out.append(h)
    return np.array(out).reshape(len(xs), -1)


def _reference(params, x, lengths):
    """The tagger in numpy: each row over its first `length` steps only, zero elsewhere."""
    b, t, _ = x.shape
    layers = sorted(k for k in params["bilstm"] if k.startswith("layer_"))
    hidden = params["bilstm"]["layer_0"]["forward"]["cell"]["hi"]["kernel"].shape[0]
    out = np.zeros((b, t, 2 * hidden))
    for r, n in enumerate(lengths):
        h = np.asarray(x[r, :n], np.float64)
        for name in layers:
            layer = params["bilstm"][name]
            fwd = _lstm(layer["forward"]["cell"], h)
            bwd = _lstm(layer["backward"]["cell"], h[::-1])[::-1]
            h = np.concatenate([fwd, bwd], axis=-1)
        out[r, :n] = h
    w, bias = params["classifier"]["kernel"], params["classifier"]["bias"]
    logits = out @ np.asarray(w, np.float64) + np.asarray(bias, np.float64)
    logits[np.arange(t)[None, :] >= np.asarray(lengths)[:, None]] = 0.0
    return logits


LENGTHS = (7, 4, 1)


@pytest.fixture(scope="module")
def tagger():
    """One model for the layout, numerics and padding tests (jit: the LSTM scan compiles once
    per shape instead of running step by step)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7, 8)).astype(np.float32)
    mask = (np.arange(7)[None, :] < np.asarray(LENGTHS)[:, None]).astype(np.int32)
    model = bilstm.BiLSTMTagger(num_tags=5, hidden=6)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), x, mask)["params"]
    apply = jax.jit(lambda x, m: model.apply({"params": params}, x, m))
    return params, apply, x, mask


def test_parameter_layout_and_count(tagger):
    params, apply, x, mask = tagger
    shapes = jax.tree_util.tree_map(lambda a: a.shape, params)
    assert set(shapes) == {"bilstm", "classifier"}
    assert set(shapes["bilstm"]) == {"layer_0", "layer_1"}
    cell0 = shapes["bilstm"]["layer_0"]["forward"]["cell"]
    assert cell0["ii"]["kernel"] == (8, 6) and cell0["hi"] == {"kernel": (6, 6), "bias": (6,)}
    assert shapes["bilstm"]["layer_1"]["backward"]["cell"]["io"]["kernel"] == (12, 6)
    assert shapes["classifier"] == {"kernel": (12, 5), "bias": (5,)}
    # per direction: 4 input kernels + 4 recurrent kernels with bias; two directions, 2 layers.
    expected = 2 * (4 * 8 * 6 + 4 * (6 * 6 + 6)) + 2 * (4 * 12 * 6 + 4 * (6 * 6 + 6)) + 12 * 5 + 5
    assert bert.param_count(params) == expected == 1697
    assert apply(x, mask).shape == (3, 7, 5)


def test_matches_numpy_reference_with_padding(tagger):
    params, apply, x, mask = tagger
    np.testing.assert_allclose(np.asarray(apply(x, mask)), _reference(params, x, LENGTHS),
                               atol=2e-5)


def test_padding_does_not_leak_into_either_direction(tagger):
    params, apply, x, mask = tagger
    base = np.asarray(apply(x, mask))
    junk = x.copy()
    junk[mask == 0] = 1e3
    longer = np.concatenate([junk, np.full((3, 4, 8), -7.0, np.float32)], axis=1)
    longer_mask = np.concatenate([mask, np.zeros((3, 4), np.int32)], axis=1)
    out = np.asarray(apply(longer, longer_mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(out[:, :7][real], base[real], atol=1e-6)
    assert (out[:, :7][~real] == 0).all() and (out[:, 7:] == 0).all()
    # ...while the backward direction is live: the last real token moves the first output.
    moved = x.copy()
    moved[1, 3] += 1.0
    changed = np.asarray(apply(moved, mask))
    assert np.abs(changed[1, 0] - base[1, 0]).max() > 1e-4
    np.testing.assert_allclose(changed[[0, 2]], base[[0, 2]], atol=1e-6)


def test_dropout_only_when_asked(tagger):
    params, apply, x, mask = tagger
    model = bilstm.BiLSTMTagger(num_tags=5, hidden=6, dropout_rate=0.5)  # the same parameters
    train = jax.jit(lambda rng: model.apply({"params": params}, x, mask, deterministic=False,
                                            rngs={"dropout": rng}))
    a, b = np.asarray(apply(x, mask)), np.asarray(train(jax.random.PRNGKey(1)))
    assert not np.allclose(a[mask > 0], b[mask > 0])
    assert (b[mask == 0] == 0).all()


def test_lstm_hidden_follows_the_encoder():
    assert bilstm.lstm_hidden_for(768) == 768 and bilstm.lstm_hidden_for(128, 64) == 64
    with pytest.raises(ValueError, match="lstm_hidden=-1"):
        bilstm.lstm_hidden_for(768, -1)
