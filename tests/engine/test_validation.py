"""engine.check_batch: every wrong input is refused before anything runs, with a message naming the array
(or parameter), what was found and what was expected."""

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, bptt, init_params

SPEC = ModelSpec(cell="lstm", input_size=3, hidden_size=4, layers=2, output_size=5, dtype="float32")
T, B = 6, 2


@pytest.fixture()
def good():
    rng = np.random.default_rng(0)
    params = init_params(SPEC, InitSpec(), rng)
    x = rng.standard_normal((T, B, 3)).astype(np.float32)
    target = rng.standard_normal((T, B, 5)).astype(np.float32)
    classes = rng.integers(0, 5, size=(T, B))
    return params, x, target, classes, np.ones((T, B))


def test_good_batch_runs(good):
    params, x, target, classes, mask = good
    assert np.isfinite(bptt(SPEC, params, x, target, mask, "mse").loss)
    assert np.isfinite(bptt(SPEC, params, x, classes, mask.astype(bool), "ce").loss)


@pytest.mark.parametrize(
    "change,kind,message",
    [
        (lambda a: a.update(loss_kind="l1"), ValueError, r"loss_kind must be one of \('mse', 'ce'\), got 'l1'"),
        (
            lambda a: a.update(x=a["x"][0]),
            ValueError,
            r"x must be time-major \(T, B, n\), got an array of shape \(2, 3\)",
        ),
        (lambda a: a.update(x=a["x"].tolist()), TypeError, "x must be a NumPy array, got list"),
        (lambda a: a.update(x=a["x"][:0]), ValueError, "x must hold at least one step and one example"),
        (
            lambda a: a.update(x=np.zeros((T, B, 4), np.float32)),
            ValueError,
            "x has 4 input features per step, the model expects input_size = 3",
        ),
        (lambda a: a.update(x=a["x"].astype(np.float64)), ValueError, "x has dtype float64, the model is float32"),
        (
            lambda a: a.update(mask=np.ones((T, B + 1))),
            ValueError,
            r"mask must have shape \(T, B\) = \(6, 2\), got \(6, 3\)",
        ),
        (lambda a: a["mask"].__setitem__((4, 1), np.nan), ValueError, r"mask must be finite; mask\[t=4, b=1\] = nan"),
        (lambda a: a.update(mask=np.full((T, B), "y")), ValueError, "mask must hold booleans or real weights"),
        (
            lambda a: a.update(target=a["target"][:, :, :4]),
            ValueError,
            r"an mse target must have shape \(T, B, k\) = \(6, 2, 5\), got \(6, 2, 4\)",
        ),
        (
            lambda a: a.update(target=np.zeros((T, B, 5), np.int64)),
            ValueError,
            "an mse target must hold floats, got dtype int64",
        ),
    ],
)
def test_bad_arrays_are_named(good, change, kind, message):
    params, x, target, _, mask = good
    args = {"x": x, "target": target, "mask": mask.copy(), "loss_kind": "mse"}
    change(args)
    with pytest.raises(kind, match=message):
        bptt(SPEC, params, args["x"], args["target"], args["mask"], args["loss_kind"])


def test_bad_ce_targets(good):
    params, x, target, classes, mask = good
    with pytest.raises(
        ValueError,
        match=r"a ce target must be integer class indices of shape \(T, B\) = \(6, 2\), "
        r"got float32 \(6, 2, 5\)",
    ):
        bptt(SPEC, params, x, target, mask, "ce")
    classes[3, 1] = 5
    with pytest.raises(
        ValueError,
        match=r"ce target classes must lie in \[0, 5\) \(output_size\); "
        r"target\[t=3, b=1\] = 5",
    ):
        bptt(SPEC, params, x, classes, mask, "ce")


def test_bad_parameters_are_named(good):
    params, x, target, _, mask = good
    wrong = params.copy()
    wrong.layers[1].W_hh = wrong.layers[1].W_hh[:, :3]
    with pytest.raises(ValueError, match=r"parameter layer1.W_hh has shape \(16, 3\), expected \(16, 4\)"):
        bptt(SPEC, wrong, x, target, mask, "mse")
    wrong = params.copy()
    wrong.W_yh = wrong.W_yh.astype(np.float64)
    with pytest.raises(ValueError, match=r"parameter readout\.W_yh has dtype float64, the model is float32"):
        bptt(SPEC, wrong, x, target, mask, "mse")
    wrong = params.copy()
    wrong.layers.pop()
    with pytest.raises(ValueError, match="do not match a 2-layer lstm model"):
        bptt(SPEC, wrong, x, target, mask, "mse")


def test_bad_backend(good):
    params, x, target, _, mask = good
    with pytest.raises(ValueError, match="backend must be 'numba' or 'numpy', got 'cuda'"):
        bptt(SPEC, params, x, target, mask, "mse", backend="cuda")


def test_nan_and_inf_in_x_are_data_not_errors(good):
    params, x, target, _, mask = good
    x[2, 0, 1] = np.nan
    result = bptt(SPEC, params, x, target, mask, "mse")
    assert (result.nonfinite.quantity, result.nonfinite.layer, result.nonfinite.timestep) == ("c", 0, 2)
    # +inf saturates the LSTM's gates (sigmoid -> 0 or 1, tanh -> +-1): the states stay finite and the first
    # non-finite value is dL/dW_hx = sum dz x^T, where inf meets the zero gradient of a saturated gate
    x[2, 0, 1] = np.inf
    result = bptt(SPEC, params, x, target, mask, "mse")
    assert np.all(np.isfinite(result.metrics["h_norm"])) and np.all(np.isfinite(result.metrics["grad_h_norm"]))
    assert (result.nonfinite.quantity, result.nonfinite.layer) == ("grad layer0.W_hx", 0)
