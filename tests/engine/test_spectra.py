"""The tracked spectral_radius and sigma_max (engine.spectra) against LAPACK's eigvals and svd, within the stated
tolerance, on trained and untrained weights, complex dominant pairs, nearly equal and crossing moduli."""

import numpy as np
import pytest

from gradscope.engine.params import spectral_stats
from gradscope.engine.spectra import TOLERANCE, SpectralTracker


def exact(W, gates=1):
    """max |eigvals| and max sigma over the gate blocks, from numpy's eigvals and svd (not spectral_stats)."""
    d = W.shape[1]
    blocks = [np.asarray(W[g * d : (g + 1) * d], dtype=np.float64) for g in range(gates)]
    rho = max(float(np.max(np.abs(np.linalg.eigvals(b)))) for b in blocks)
    sigma = max(float(np.linalg.svd(b, compute_uv=False)[0]) for b in blocks)
    return rho, sigma


def check_walk(matrices, gates=1, expect_tracked=True):
    """Feed the matrices in order (exact at the first) and compare every answer with eigvals / svd."""
    tracker = SpectralTracker(gates)
    worst = [0.0, 0.0]
    for k, W in enumerate(matrices):
        got = tracker(W, exact=k == 0)
        want = exact(W, gates)
        for i, name in enumerate(("spectral_radius", "sigma_max")):
            error = abs(got[i] - want[i]) / want[i]
            worst[i] = max(worst[i], error)
            assert error <= TOLERANCE[name], f"{name} at step {k}: {got[i]!r} against {want[i]!r}"
    if expect_tracked:
        assert tracker.counts["tracked"] >= (len(matrices) - 1) * gates // 2, tracker.counts
    return tracker, worst


def walk(W0, steps, eps, rng):
    """W0, W0 + E1, W0 + E1 + E2, ...: the small moves of training (||E_k||_2 ~ 2 eps)."""
    d = W0.shape[1]
    out = [W0]
    for _ in range(steps):
        out.append(out[-1] + eps * rng.standard_normal(W0.shape) / np.sqrt(d))
    return out


def with_spectrum(top: list[complex], rest_radius: float, d: int, rng, nonnormal: float = 0.0) -> np.ndarray:
    """A real d x d matrix whose eigenvalues are ``top`` (complex ones with their conjugates) and d - len others
    inside |z| < rest_radius; ``nonnormal`` scales a strictly upper triangular part of its real Schur form."""
    T = np.zeros((d, d))
    i = 0
    for z in top:
        if z.imag == 0:
            T[i, i] = z.real
            i += 1
        else:
            T[i : i + 2, i : i + 2] = [[z.real, z.imag], [-z.imag, z.real]]
            i += 2
    rest = rng.standard_normal((d - i, d - i)) / np.sqrt(d - i)
    rest *= rest_radius / np.max(np.abs(np.linalg.eigvals(rest)))
    T[i:, i:] = rest
    T += nonnormal * np.triu(rng.standard_normal((d, d)), k=2) / np.sqrt(d)  # keeps the 2x2 blocks' eigenvalues
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return Q @ T @ Q.T


def test_exact_is_spectral_stats_and_nonfinite_gives_nan():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4 * 24, 24)) / np.sqrt(24)
    tracker = SpectralTracker(4)
    assert tracker(W, exact=True) == spectral_stats(W, 4)
    bad = W.copy()
    bad[3, 5] = np.nan
    assert all(np.isnan(tracker(bad)))
    assert tracker(W) == spectral_stats(W, 4)  # after a NaN it starts again from an exact measurement
    assert tracker(W * 1e200)[0] == pytest.approx(spectral_stats(W, 4)[0] * 1e200, rel=1e-12)  # extreme scale


def test_untrained_gaussian_weights_random_walk():
    rng = np.random.default_rng(1)
    for d in (16, 64, 128):
        check_walk(walk(rng.standard_normal((d, d)) / np.sqrt(d), 30, 1e-3, rng))
    for d in (1, 2, 3):  # tiny blocks: the guard and the Lanczos space are the whole space (d = 1: exact)
        check_walk(walk(rng.standard_normal((3 * d, d)) / np.sqrt(d), 6, 1e-3, rng), gates=3, expect_tracked=d > 1)


def test_lstm_gate_blocks_random_walk():
    rng = np.random.default_rng(2)
    d = 48
    check_walk(walk(rng.standard_normal((4 * d, d)) / np.sqrt(d), 25, 2e-3, rng), gates=4)


def test_complex_dominant_pair_nonnormal():
    rng = np.random.default_rng(3)
    W0 = with_spectrum([1.2 * np.exp(0.7j)], 0.9, 64, rng, nonnormal=1.0)
    tracker, _ = check_walk(walk(W0, 30, 1e-3, rng))
    assert tracker.counts["fallback"] == 0


@pytest.mark.parametrize(
    "top",
    [
        [1.1 * np.exp(0.4j), 1.1 * (1 - 1e-7) * np.exp(2.1j)],  # two pairs of nearly the same modulus
        [1.05 * np.exp(1.3j), -1.05 * (1 - 1e-9) + 0j],  # a pair and a real eigenvalue, nearly equal moduli
        [1.0 * np.exp(0.2j), 0.9995 * np.exp(0.25j), 0.999 + 0j],  # close in the plane, too
    ],
)
def test_nearly_equal_moduli(top):
    rng = np.random.default_rng(4)
    check_walk(walk(with_spectrum(top, 0.8, 64, rng, nonnormal=0.5), 25, 5e-4, rng))


def test_moduli_that_cross_while_tracked():
    """The top pair shrinks while another grows past it: the tracker must follow the new top."""
    rng = np.random.default_rng(5)
    d = 40
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    rest = rng.standard_normal((d - 4, d - 4)) / np.sqrt(d - 4)
    rest *= 0.7 / np.max(np.abs(np.linalg.eigvals(rest)))
    coupling = 0.3 * rng.standard_normal((4, d - 4)) / np.sqrt(d)  # non-normal, and fixed
    matrices = []
    for s in np.linspace(0, 1, 41):
        a, b = 1.0 - 0.05 * s, 0.97 + 0.06 * s  # moduli cross at s = 0.36
        T = np.zeros((d, d))
        T[0:2, 0:2] = a * np.array([[np.cos(0.5), np.sin(0.5)], [-np.sin(0.5), np.cos(0.5)]])
        T[2:4, 2:4] = b * np.array([[np.cos(2.0), np.sin(2.0)], [-np.sin(2.0), np.cos(2.0)]])
        T[4:, 4:] = rest
        T[:4, 4:] = coupling
        matrices.append(Q @ T @ Q.T)
    check_walk(matrices)


def test_orthogonal_and_identity_weights_fall_back_to_exact():
    """Every eigenvalue on the unit circle: more candidates than are tracked, so each call is exact."""
    rng = np.random.default_rng(6)
    d = 32
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    tracker, _ = check_walk([Q + 1e-4 * k * np.eye(d) for k in range(5)], expect_tracked=False)
    assert tracker.counts["fallback"] >= 3
    check_walk([np.eye(d) * (1 + 1e-3 * k) for k in range(4)], expect_tracked=False)


def test_trained_lstm_every_iteration_within_tolerance():
    """The trainer's records against eigvals / svd of the W_hh each iteration measured (before its update)."""
    from gradscope.config import loads
    from gradscope.engine.trainer import Training

    text = """
schema_version = 1
[experiment]
name = "spectra"
[defaults]
cell = "lstm"
hidden_size = 40
dtype = "float64"
[defaults.task]
name = "probe"
seq_len = 12
batch_size = 8
input_size = 6
output_size = 6
[defaults.train]
iterations = 25
optimizer = "sgd"
lr = 0.05
spectral_every = 1
"""
    run = loads(text).runs[0]
    training = Training(run, seed=0, backend="numba")
    measured = [training.params.layers[0].W_hh.copy()]
    records = []
    for record in training:
        records.append(record)
        measured.append(training.params.layers[0].W_hh.copy())
    assert len(records) == 25
    for record, W in zip(records, measured):
        rho, sigma = exact(W, 4)
        assert record.metrics["spectral_radius"][0] == pytest.approx(rho, rel=TOLERANCE["spectral_radius"])
        assert record.metrics["sigma_max"][0] == pytest.approx(sigma, rel=TOLERANCE["sigma_max"])
    for k in (0, 24):  # exact at iteration 0 and at the last (exported) iteration
        assert (records[k].metrics["spectral_radius"][0], records[k].metrics["sigma_max"][0]) == spectral_stats(
            measured[k], 4
        )
    assert training._spectra[0].counts["tracked"] >= 4 * 20
