"""gradscope.theory against independent estimates: Monte Carlo, closed forms, the NumPy reference engine and
the initialisation code it models."""

import math

import numpy as np
import pytest

from gradscope import theory as th
from gradscope.engine import InitSpec, ModelSpec, bptt, init_params
from gradscope.engine.params import init_matrix


def _mc_mean(values: np.ndarray) -> tuple[float, float]:
    """Monte-Carlo mean and its standard error."""
    return float(values.mean()), float(values.std() / math.sqrt(values.size))


# ----------------------------------------------------------------------------------------- expectations
@pytest.mark.parametrize("q", [0.3, 1.0, 4.0])
def test_quadrature_integrates_gaussian_moments_exactly(q):
    assert th.gaussian_expectation(lambda z: z**2, q) == pytest.approx(q, rel=1e-12)
    assert th.gaussian_expectation(lambda z: z**4, q) == pytest.approx(3 * q**2, rel=1e-12)
    assert th.gaussian_expectation(np.cos, q) == pytest.approx(math.exp(-q / 2), rel=1e-12)


@pytest.mark.parametrize("q", [1e-3, 0.5, 9.0, 60.0, 2000.0])
def test_quadrature_agrees_with_adaptive_integration_for_narrow_peaks(q):
    """tanh'(z)^2 is a peak of width ~1 under a Gaussian of width sqrt(q): the hard case for a fixed rule."""
    from scipy.integrate import quad

    def g(u):  # tanh'(u)^2
        return (1 - np.tanh(u) ** 2) ** 2

    s = math.sqrt(q)
    reference = quad(
        lambda u: g(u) * math.exp(-u * u / (2 * q)) / math.sqrt(2 * math.pi * q),
        -12 * s,
        12 * s,
        points=[0.0],
        limit=500,
        epsabs=0,
        epsrel=1e-12,
    )[0]
    assert th.gaussian_expectation(g, q) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
@pytest.mark.parametrize("q", [0.2, 1.0, 2.5, 9.0, 40.0])
def test_moments_agree_with_monte_carlo(activation, q):
    rng = np.random.default_rng(12345)
    z = rng.normal(0.0, math.sqrt(q), size=2_000_000)
    f = np.tanh(z) if activation == "tanh" else 1 / (1 + np.exp(-z))
    df = 1 - f**2 if activation == "tanh" else f * (1 - f)
    for estimate, samples in (
        (th.second_moment(activation, q), f**2),
        (th.derivative_second_moment(activation, q), df**2),
    ):
        mean, se = _mc_mean(samples)
        assert abs(estimate - mean) < 5 * se, (estimate, mean, se)


def test_relu_and_linear_closed_forms():
    assert th.second_moment("relu", 3.0) == 1.5
    assert th.derivative_second_moment("relu", 3.0) == 0.5
    assert th.mean_field_gain("relu", 3.0) == pytest.approx(math.sqrt(1.5))
    assert th.mean_field_gain("relu", 1.5) == pytest.approx(math.sqrt(0.75))
    assert th.fixed_point_variance("relu", 1.0, 1.0) == pytest.approx(2.0)  # q = q/2 + 1
    assert th.fixed_point_variance("relu", 3.0, 1.0) == math.inf  # past the edge of chaos
    assert th.fixed_point_variance("linear", 0.5, 1.0) == pytest.approx(2.0)


def test_unknown_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="'softplus'"):
        th.mean_field_gain("softplus", 1.0)
    with pytest.raises(ValueError, match="variance q"):
        th.gaussian_expectation(np.tanh, -1.0)


# ------------------------------------------------------------------------------------ the variance map
@pytest.mark.parametrize("activation,c", [("tanh", 1.0), ("tanh", 3.0), ("sigmoid", 2.0)])
def test_fixed_point_solves_the_map_and_matches_a_simulated_wide_network(activation, c):
    q_in = 1.0
    q_star = th.fixed_point_variance(activation, c, q_in)
    assert th.variance_map(activation, q_star, c, q_in) == pytest.approx(q_star, rel=1e-10)
    # Monte Carlo: a wide random network driven by N(0, 1) inputs; mean square of z over units, batch, late t
    rng = np.random.default_rng(7)
    d, n, B, T = 1500, 64, 8, 40
    f = np.tanh if activation == "tanh" else (lambda v: 1 / (1 + np.exp(-v)))
    W_hh = rng.normal(0, math.sqrt(c / d), size=(d, d))
    W_hx = rng.normal(0, math.sqrt(q_in / n), size=(d, n))
    h = np.zeros((B, d))
    zz = []
    for t in range(T):
        z = rng.normal(size=(B, n)) @ W_hx.T + h @ W_hh.T  # (B, d)
        h = f(z)
        if t >= 20:
            zz.append(np.mean(z**2))
    assert np.mean(zz) == pytest.approx(q_star, rel=0.03)


def test_trajectory_starts_at_the_input_variance_and_settles_at_the_fixed_point():
    q = th.variance_trajectory("tanh", 2.0, 1.0, 30)
    assert q[0] == 1.0  # h_{-1} = 0: only the input
    assert q[-1] == pytest.approx(th.fixed_point_variance("tanh", 2.0, 1.0), rel=1e-9)
    assert np.all(np.diff(q) >= 0)  # the map climbs monotonically
    relu = th.variance_trajectory("relu", 3.0, 1.0, 5)  # q_t = 1.5 q_{t-1} + 1
    assert relu == pytest.approx([1.0, 2.5, 4.75, 8.125, 13.1875])


def test_stacked_layers_feed_each_layer_the_output_variance_of_the_one_below():
    q = th.layer_input_variances("tanh", 1.5, 1.0, 1.0, layers=3, T=10)
    assert q.shape == (3, 10)
    assert q[0] == pytest.approx(th.variance_trajectory("tanh", 1.5, 1.0, 10))
    q_in_1 = np.array([th.second_moment("tanh", v) for v in q[0]])
    assert q[1] == pytest.approx(th.variance_trajectory("tanh", 1.5, q_in_1, 10))


# ------------------------------------------------------------- predictions against the reference engine
def _probe_gradients(activation, c, seed, d=256, T=60, B=16, n=32):
    """grad_h_norm (T,) of a fresh float64 RNN on the probe task (loss at the last step), and sigma_max(W_hh)."""
    rng = np.random.default_rng(seed)
    spec = ModelSpec(cell="rnn", activation=activation, input_size=n, hidden_size=d, output_size=n, dtype="float64")
    params = init_params(spec, InitSpec(recurrent_scale=c, input_scale=1.0), rng)
    x = rng.normal(size=(T, B, n))
    target = rng.normal(size=(T, B, n))
    mask = np.zeros((T, B))
    mask[-1] = 1
    result = bptt(spec, params, x, target, mask, "mse", backend="numpy")
    return result.metrics["grad_h_norm"][0], float(np.linalg.norm(params.layers[0].W_hh, 2))


@pytest.mark.parametrize("activation,c", [("tanh", 1.0), ("tanh", 3.0), ("sigmoid", 2.0), ("relu", 1.5)])
def test_mean_field_slope_matches_measured_backprop(activation, c):
    """The fitted per-step log gain of ||dL/dh_t|| over 4 seeds is within 0.03 of the mean-field log gain."""
    slopes = []
    for seed in range(4):
        g, _ = _probe_gradients(activation, c, seed)
        ts = np.arange(10, 55)
        slopes.append(-np.polyfit(ts, np.log(g[ts]), 1)[0])
    predicted = math.log(th.mean_field_gain(activation, c, q_in=1.0))
    assert np.mean(slopes) == pytest.approx(predicted, abs=0.03)
    # and the drawn line has exactly that slope once q_t has settled
    line = th.mean_field_line(activation, c, 1.0, 60, 59, 1.0)
    assert (line[10] - line[11]) * math.log(10) == pytest.approx(predicted, rel=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_measured_gradients_stay_under_the_pascanu_bound(activation):
    g, sigma = _probe_gradients(activation, 2.0, seed=3, d=128, T=40)
    bound = th.pascanu_line(activation, sigma, 40, 39, g[-1])
    assert bound[39] == pytest.approx(math.log10(g[-1]))
    assert np.all(np.log10(g) <= bound + 1e-9)
    step = bound[0] - bound[1]
    assert step == pytest.approx(math.log10(th.DERIVATIVE_BOUND[activation] * sigma))


# ---------------------------------------------------------------------------------------- anchoring
def test_anchored_line_passes_through_the_anchor_and_stops_after_it():
    line = th.relu_line(3.0, T=10, anchor_t=6, anchor_value=0.01)
    assert line[6] == pytest.approx(-2.0)
    assert np.all(np.isnan(line[7:]))
    assert line[0] == pytest.approx(-2.0 + 6 * 0.5 * math.log10(1.5))
    assert np.all(np.isnan(th.relu_line(3.0, 10, 6, 0.0)))  # nothing to anchor at
    assert np.all(np.isnan(th.relu_line(3.0, 10, 6, float("nan"))))
    with pytest.raises(ValueError, match="anchor step 10"):
        th.relu_line(3.0, 10, 10, 1.0)


def test_anchored_line_uses_the_gain_of_each_step():
    gains = np.log10([9.0, 2.0, 3.0, 5.0])  # stepping back from s multiplies by gains[s]
    line = th.anchored_line(gains, anchor_t=2, anchor_value=1.0)
    assert 10 ** line[2] == pytest.approx(1.0)
    assert 10 ** line[1] == pytest.approx(3.0)
    assert 10 ** line[0] == pytest.approx(6.0)
    assert np.isnan(line[3])


def test_last_scored_step():
    mask = np.zeros((8, 3))
    mask[5, 1] = 1
    assert th.last_scored_step(mask=mask) == 5
    assert th.last_scored_step(loss_t=np.array([0.1, 0.2, 0.0, 0.0])) == 1
    assert th.last_scored_step(T=7) == 6


# ----------------------------------------------------------------------- initialisation -> variance c
@pytest.mark.parametrize(
    "scheme,scale",
    [("gaussian", 3.0), ("uniform", 1.5), ("xavier", 1.0), ("kaiming", 1.0), ("orthogonal", 1.2), ("pytorch", 1.0)],
)
@pytest.mark.parametrize("rows,cols", [(400, 400), (400, 100)])
def test_variance_factor_matches_the_initialiser(scheme, scale, rows, cols):
    d = rows
    rng = np.random.default_rng(0)
    if scheme == "pytorch":  # drawn inside init_params; same law: U(-k, k), k = scale/sqrt(d)
        k = scale / math.sqrt(d)
        W = rng.uniform(-k, k, size=(rows, cols))
    else:
        W = init_matrix(scheme, scale, rows, cols, rng)
    c = th.variance_factor(scheme, scale, fan_in=cols, fan_out=rows, hidden_size=d)
    assert np.var(W) * cols == pytest.approx(c, rel=0.02)
    assert th.variance_factor("identity", 1.0, 10, 10, 10) is None


# ------------------------------------------------------------------------------- a run's theory inputs
def test_run_theory_reads_scales_and_inputs_from_the_run():
    from gradscope.config import RunConfig

    run = RunConfig.model_validate(
        {
            "activation": "tanh",
            "hidden_size": 64,
            "init": {"recurrent_scale": 2.0, "input_scale": 0.5},
            "task": {"seq_len": 20},
        }
    )
    rt = th.RunTheory.for_run(run)
    assert rt.c == 2.0 and rt.layer == 0
    assert rt.q_in == pytest.approx(np.full(20, 0.5))  # x ~ N(0, 1): q_in = input_scale
    x = np.zeros((20, 4, 32))
    x[:, :, 0] = 2.0  # E[x^2] = 4 / 32 per component
    assert th.RunTheory.for_run(run, x).q_in == pytest.approx(np.full(20, 0.5 * 4 / 32))
    line = rt.mean_field(19, 1.0)
    assert line == pytest.approx(th.mean_field_line("tanh", 2.0, 0.5, 20, 19, 1.0))
    assert th.RunTheory.for_run(run.model_copy(update={"cell": "lstm"})) is None
    orth = run.model_copy(
        update={"init": run.init.model_copy(update={"recurrent": "orthogonal", "recurrent_scale": 1.1})}
    )
    assert th.RunTheory.for_run(orth).c == pytest.approx(1.21)
    ident = run.model_copy(update={"init": run.init.model_copy(update={"recurrent": "identity"})})
    assert th.RunTheory.for_run(ident).mean_field(19, 1.0) is None


def test_run_theory_of_a_stack_describes_the_top_layer():
    from gradscope.config import RunConfig

    run = RunConfig.model_validate(
        {
            "activation": "tanh",
            "layers": 3,
            "hidden_size": 32,
            "init": {"recurrent_scale": 1.5},
            "task": {"seq_len": 12},
        }
    )
    rt = th.RunTheory.for_run(run)
    q = th.layer_input_variances("tanh", 1.5, 1.0, 1.0, 3, 12)
    assert rt.layer == 2
    # the top layer's input is the middle layer's output: q_in = c_in E[f(z^{(1)})^2]
    assert rt.q_in == pytest.approx([th.second_moment("tanh", v) for v in q[1]])
    assert th.variance_trajectory("tanh", 1.5, rt.q_in, 12) == pytest.approx(q[2])


def test_run_theory_has_no_activation_line_for_gated_cells():
    from gradscope.config import RunConfig

    run = RunConfig.model_validate({"activation": "tanh", "hidden_size": 16, "task": {"seq_len": 8}})
    assert th.RunTheory.for_run(run) is not None
    for gated in ("lstm", "gru"):
        assert th.RunTheory.for_run(run.model_copy(update={"cell": gated})) is None


# ------------------------------------------------------------------ the tanh phase diagram (Poole et al. 2016)
# Published values: the edge of chaos chi_1 = 1 of Poole et al. (2016, Fig. 1) / Schoenholz et al. (2017) and
# chi_1 at sigma_b = 0.3 for three weight scales, each to 1e-3.
@pytest.mark.parametrize("sigma_b,sigma_w", [(0.05, 1.1225), (0.3, 1.3956), (1.0, 1.8556)])
def test_critical_sigma_w_matches_published_values(sigma_b, sigma_w):
    assert th.critical_sigma_w(sigma_b) == pytest.approx(sigma_w, abs=1e-3)


@pytest.mark.parametrize("sigma_w,chi", [(1.3, 0.940), (2.5, 1.585), (4.0, 2.367)])
def test_chi_1_matches_published_values(sigma_w, chi):
    assert th.chi_1(sigma_w, 0.3) == pytest.approx(chi, abs=1e-3)


@pytest.mark.parametrize("sigma_w,sigma_b", [(1.3, 0.3), (2.5, 0.05), (0.8, 1.0), (1.5, 0.0)])
def test_tanh_fixed_point_agrees_with_iterating_the_variance_map(sigma_w, sigma_b):
    """brentq on the fixed-point equation against plain iteration of the map (started above 0)."""
    q = th.tanh_fixed_point(sigma_w, sigma_b)
    iterated = 1.0  # above 0: the unbiased map leaves 0 alone
    for _ in range(5000):
        iterated = th.variance_map("tanh", iterated, sigma_w**2, 0.0, sigma_b**2)
    assert q == pytest.approx(iterated, rel=1e-8)
    assert th.tanh_fixed_point(0.9, 0.0) == 0.0  # ordered and unbiased: the rest state


def test_critical_line_is_where_chi_1_crosses_one():
    sigma_b, sigma_w = th.critical_line()
    assert sigma_b[0] == 0 and sigma_b[-1] == pytest.approx(2.0) and sigma_w[0] == 1.0
    assert np.all(np.diff(sigma_w) > 0)  # more bias needs bigger weights
    for sb, sw in zip(sigma_b[[5, 40, 100]], sigma_w[[5, 40, 100]]):
        # computed through the fixed point (not the line's parametrisation): ordered left, chaotic right
        assert th.chi_1(sw, sb) == pytest.approx(1.0, abs=1e-9)
        assert th.chi_1(0.99 * sw, sb) < 1 < th.chi_1(1.01 * sw, sb)
    assert th.critical_line([0.3, 1.0])[1] == pytest.approx([th.critical_sigma_w(0.3), th.critical_sigma_w(1.0)])
    with pytest.raises(ValueError, match="sigma_b"):
        th.critical_sigma_w(-0.1)


@pytest.mark.parametrize("c", [1.5, 2.0, 3.0])
def test_relu_log_gain_matches_a_wide_random_layer(c):
    rng = np.random.default_rng(11)
    d = 3000
    W = rng.normal(0, math.sqrt(c / d), size=(d, d))
    active = rng.normal(size=(16, d)) > 0  # half the units, as for symmetric z
    v = rng.normal(size=(16, d))
    ratio = np.log(np.linalg.norm((v @ W) * active, axis=1) / np.linalg.norm(v, axis=1))
    assert ratio.mean() == pytest.approx(th.relu_log_gain(c), abs=0.01)
    assert th.relu_log_gain(2.0) == 0.0


# ---------------------------------------------------- Lyapunov exponents of a random tanh RNN (Engelken et al.)
@pytest.mark.parametrize("g,lam", [(2.0, 0.1547), (3.0, 0.3102)])
def test_largest_lyapunov_exponent_matches_published_values(g, lam):
    assert th.largest_lyapunov_exponent(g) == pytest.approx(lam, abs=2e-3)


def test_order_to_chaos_transition_at_g_one():
    assert th.chaos_onset_gain() == 1.0
    assert th.largest_lyapunov_exponent(0.5) == pytest.approx(math.log(0.5))  # rest state: J = W, radius g
    assert th.largest_lyapunov_exponent(0.98) < 0 < th.largest_lyapunov_exponent(1.02)
    g_in = th.chaos_onset_gain(0.5)  # input noise delays the onset
    assert g_in > 1
    assert th.largest_lyapunov_exponent(g_in, 0.5) == pytest.approx(0.0, abs=1e-9)


def _tanh_network(g, d, T, rng, burn=200):
    W = rng.normal(0, g / math.sqrt(d), size=(d, d))
    h = np.tanh(rng.normal(size=d))
    for _ in range(burn):
        h = np.tanh(W @ h)
    return W, h


def test_largest_lyapunov_exponent_matches_a_simulated_network():
    rng = np.random.default_rng(5)
    W, h = _tanh_network(2.0, 800, 0, rng)
    v = rng.normal(size=800)
    v /= np.linalg.norm(v)
    logs = []
    for _ in range(400):
        h = np.tanh(W @ h)
        v = (1 - h**2) * (W @ v)  # J_t v
        n = np.linalg.norm(v)
        logs.append(math.log(n))
        v /= n
    assert np.mean(logs[50:]) == pytest.approx(th.largest_lyapunov_exponent(2.0), abs=0.03)


@pytest.mark.parametrize("g,mean", [(2.0, -1.1505), (3.0, -2.2739)])
def test_mean_lyapunov_exponent_matches_published_large_network_values(g, mean):
    assert th.mean_lyapunov_exponent(g) == pytest.approx(mean, abs=0.01)


def test_mean_lyapunov_exponent_matches_the_volume_growth_of_a_simulated_network():
    """(1/d) mean_t ln|det J_t| = (1/d) [mean_t sum_i ln(1 - h_ti^2) + ln|det W|], measured, vs the formula."""
    rng = np.random.default_rng(9)
    d, measured = 1000, []
    for _ in range(3):  # one network scatters by ~0.01 (its own q* and det W): average three
        W, h = _tanh_network(2.0, d, 0, rng)
        log_slopes = []
        for _ in range(150):
            h = np.tanh(W @ h)
            log_slopes.append(np.mean(np.log1p(-(h**2))))
        measured.append(np.mean(log_slopes) + np.linalg.slogdet(W)[1] / d)
    assert np.mean(measured) == pytest.approx(th.mean_lyapunov_exponent(2.0, d=d), abs=0.012)


def test_ginibre_mean_log_det_against_sampled_matrices():
    rng = np.random.default_rng(3)
    d = 40
    logdets = [np.linalg.slogdet(rng.normal(0, 1 / math.sqrt(d), size=(d, d)))[1] / d for _ in range(4000)]
    mean, se = _mc_mean(np.array(logdets))
    assert abs(th.ginibre_mean_log_det(d) - mean) < 5 * se
    assert th.ginibre_mean_log_det(1) == pytest.approx(-0.5 * (np.euler_gamma + math.log(2)))  # E ln|N(0,1)|
    assert th.ginibre_mean_log_det(10**6) == pytest.approx(th.ginibre_mean_log_det(), abs=1e-5)
    with pytest.raises(ValueError, match="matrix size"):
        th.ginibre_mean_log_det(0)


# ------------------------------------------------------------------------- gated cells at initialisation
def test_gate_mean_closed_forms_and_monte_carlo():
    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    assert th.gate_mean(0.0, 7.0) == pytest.approx(0.5, abs=1e-12)  # symmetric about b = 0
    assert th.lstm_cell_decay(1.0, 5) == pytest.approx(sigmoid(1.0) ** 5, rel=1e-12)
    assert th.gru_update_decay(-2.0, 3) == pytest.approx(sigmoid(-2.0) ** 3, rel=1e-12)
    rng = np.random.default_rng(2)
    b, q, k = 1.0, 0.8, 6
    a = b + math.sqrt(q) * rng.normal(size=(400_000, k))  # independent steps
    products = np.prod(sigmoid(a), axis=1)
    mean, se = _mc_mean(products)
    assert abs(th.lstm_cell_decay(b, k, q) - mean) < 5 * se
    mean2, se2 = _mc_mean(products**2)
    assert abs(th.lstm_cell_decay(b, k, q, "rms") ** 2 - mean2) < 5 * se2
    assert th.lstm_cell_decay(b, k, q) < sigmoid(b) ** k  # sigma is concave for b > 0
    with pytest.raises(ValueError, match="'median'"):
        th.gate_mean(1.0, 0.5, "median")


def test_gate_preactivation_variance_matches_random_weights():
    rng = np.random.default_rng(4)
    n, d, c_in, c_rec = 50, 400, 1.0, 0.5
    x = rng.normal(0, 2.0, size=n)  # E[x^2] = 4
    h = rng.uniform(-0.8, 0.8, size=d)
    a = [
        rng.normal(0, math.sqrt(c_in / n), size=(d, n)) @ x + rng.normal(0, math.sqrt(c_rec / d), size=(d, d)) @ h
        for _ in range(20)
    ]
    q = th.gate_preactivation_variance(c_in, np.mean(x**2), c_rec, np.mean(h**2))
    assert np.var(a) == pytest.approx(q, rel=0.03)


def test_gate_lines_anchor_like_the_other_lines():
    b, q, T, a = 1.5, 0.3, 12, 8
    line = th.lstm_cell_line(b, q, T, a, 0.02)
    assert line == pytest.approx(th.anchored_line(np.full(T, math.log10(th.gate_mean(b, q))), a, 0.02), nan_ok=True)
    assert line[a] == pytest.approx(math.log10(0.02)) and np.all(np.isnan(line[a + 1 :]))
    assert np.all(np.isnan(th.gru_update_line(b, q, T, a, 0.0)))
    with pytest.raises(ValueError, match="anchor step 12"):
        th.gru_update_line(b, q, T, 12, 1.0)
    # one bias per unit (chrono): the average over units of each unit's product, not a straight line
    biases = np.array([0.0, 1.0, 3.0])
    m = np.array([th.gate_mean(v, q) for v in biases])
    per_unit = th.lstm_cell_line(biases, q, T, a, 1.0)
    assert 10 ** per_unit[a - 5] == pytest.approx(np.mean(m**5))
    rms = th.gru_update_line(biases, q, T, a, 1.0, "rms")
    r = np.array([th.gate_mean(v, q, "rms") for v in biases])
    assert 10 ** rms[0] == pytest.approx(math.sqrt(np.mean(r ** (2 * a))))
    assert np.isfinite(th.lstm_cell_line(biases, q, 5000, 4999, 1.0)[0])  # no underflow on long lines


def test_every_public_name_of_the_theory_modules_is_importable_from_the_package():
    import importlib

    for module in ("meanfield", "lines", "criticality", "lyapunov", "gates", "sweeps"):
        names = importlib.import_module(f"gradscope.theory.{module}").__all__
        assert set(names) <= set(th.__all__), module
        assert all(
            getattr(th, name) is getattr(importlib.import_module(f"gradscope.theory.{module}"), name) for name in names
        )
