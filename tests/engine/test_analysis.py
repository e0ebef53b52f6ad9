"""engine.analysis against references nobody here wrote: PyTorch float64 autograd (step Jacobians, long-lag
products, the lag split of dL/dW_hh), central finite differences, and the exact identities of the QR method."""

import numpy as np
import pytest

from gradscope.engine import InitSpec, ModelSpec, init_params
from gradscope.engine.analysis import (
    grad_W_hh_by_lag,
    jacobian_norms,
    qr_exponents,
    stack_direct_gradients,
    stack_streams,
)
from gradscope.engine.analysis.longlag import lag_terms, top_singular_values
from gradscope.engine.analysis.maps import take_steps
from gradscope.engine.reference import bptt

CASES = [("rnn", "tanh"), ("rnn", "relu"), ("rnn", "sigmoid"), ("rnn", "linear"), ("lstm", "tanh"), ("gru", "tanh")]


def model(cell, activation, layers=1, bidirectional=False, d=5, n=3, k=2, scale=2.0, seed=0):
    spec = ModelSpec(
        cell=cell,
        activation=activation,
        input_size=n,
        hidden_size=d,
        layers=layers,
        output_size=k,
        dtype="float64",
        bidirectional=bidirectional,
    )
    rng = np.random.default_rng(seed)
    params = init_params(spec, InitSpec(recurrent_scale=scale, input_scale=1.0), rng)
    for p in params.layers:  # biases away from zero, so every term of the step maps is exercised
        p.b_h += 0.3 * rng.standard_normal(p.b_h.shape)
        if p.b_hh is not None:
            p.b_hh += 0.3 * rng.standard_normal(p.b_hh.shape)
    return spec, params


def batch(T=7, B=3, n=3, k=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, n)), rng.standard_normal((T, B, k)), np.ones((T, B))


def torch_step(torch, cell, activation, p):
    """The cell's step in PyTorch, written from docs/trace_format.md, on one example: s (D,), x (n,)."""
    W_hx, W_hh, b_h = (torch.tensor(a) for a in (p.W_hx, p.W_hh, p.b_h))
    d = p.W_hh.shape[1]
    f = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "linear": lambda z: z}.get(activation)

    def step(s, x):
        if cell == "rnn":
            return f(W_hx @ x + W_hh @ s + b_h)
        if cell == "lstm":
            h, c = s[:d], s[d:]
            z = W_hx @ x + W_hh @ h + b_h
            i, fg, g, o = (torch.sigmoid(z[:d]), torch.sigmoid(z[d : 2 * d]), torch.tanh(z[2 * d : 3 * d]),
                           torch.sigmoid(z[3 * d :]))  # fmt: skip
            c = fg * c + i * g
            return torch.cat([o * torch.tanh(c), c])
        a, u = W_hx @ x + b_h, W_hh @ s + torch.tensor(p.b_hh)
        r, z = torch.sigmoid(a[:d] + u[:d]), torch.sigmoid(a[d : 2 * d] + u[d : 2 * d])
        return (1 - z) * torch.tanh(a[2 * d :] + r * u[2 * d :]) + z * s

    return step


def torch_trajectory(torch, step, X, s0):
    """States s_0 .. s_{T-1} of one example from s_{-1} = s0."""
    out, s = [], s0
    for t in range(X.shape[0]):
        s = step(s, X[t])
        out.append(s)
    return out


@pytest.mark.parametrize("cell,activation", CASES)
def test_step_jacobians_match_torch(torch, cell, activation):
    spec, params = model(cell, activation)
    x, _, _ = batch()
    stream = stack_streams(spec, params, x)[0]
    step = torch_step(torch, cell, activation, params.layers[0])
    T, N, _ = stream.S.shape
    for t in range(1, T):
        J = stream.map.jacobian(stream.p, take_steps(stream.caches, N, t, t + 1))  # (N, D, D)
        for b in range(N):
            ref = torch.autograd.functional.jacobian(
                lambda s, t=t, b=b: step(s, torch.tensor(x[t, b])), torch.tensor(stream.S[t - 1, b])
            ).numpy()
            np.testing.assert_allclose(J[b], ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("cell,activation", CASES)
def test_step_jacobians_match_finite_differences(cell, activation):
    spec, params = model(cell, activation, seed=3)
    x, _, _ = batch(T=4, B=2)
    stream = stack_streams(spec, params, x)[0]
    N, D, eps = 2, stream.D, 1e-6
    t = 2
    J = stream.map.jacobian(stream.p, take_steps(stream.caches, N, t, t + 1))
    for j in range(D):
        e = np.zeros(D)
        e[j] = eps
        plus = stream.map.forward(stream.p, x[t], stream.S[t - 1] + e, activation)[0]
        minus = stream.map.forward(stream.p, x[t], stream.S[t - 1] - e, activation)[0]
        np.testing.assert_allclose(J[:, :, j], (plus - minus) / (2 * eps), rtol=1e-5, atol=1e-8)


def _torch_long_lag(torch, spec, params, x):
    """Per stream, (sigma (T,), fro (T,)): the stack run in PyTorch from the parameters alone, the products
    ds_{T-1}/ds_t by torch.autograd.functional.jacobian of the composed steps, norms by torch.linalg."""
    T, B, _ = x.shape
    D_dirs = spec.directions
    X = [torch.tensor(x[:, b]) for b in range(B)]  # per example (T, n) by input position
    out = []
    for l in range(spec.layers):
        nxt = [[None] * D_dirs for _ in range(B)]
        for r in range(D_dirs):
            s_idx = l * D_dirs + r
            p = params.layers[s_idx]
            step = torch_step(torch, spec.cell, spec.activation, p)
            D = p.W_hh.shape[1] * (2 if spec.cell == "lstm" else 1)
            sig, fro = np.zeros((B, T)), np.zeros((B, T))
            for b in range(B):
                Xs = X[b].flip(0) if r else X[b]  # its own step order
                S = torch_trajectory(torch, step, Xs, torch.zeros(D, dtype=torch.float64))
                for t in range(T):

                    def tail(s, t=t, Xs=Xs, step=step):
                        for u in range(t + 1, T):
                            s = step(s, Xs[u])
                        return s

                    P = torch.autograd.functional.jacobian(tail, S[t].detach())
                    sig[b, t] = float(torch.linalg.matrix_norm(P, ord=2))
                    fro[b, t] = float(torch.linalg.matrix_norm(P)) / np.sqrt(D)
                H = torch.stack([s[: p.W_hh.shape[1]] for s in S]).detach()  # (T, d) in step order
                nxt[b][r] = H.flip(0) if r else H
            out.append((sig.mean(axis=0), fro.mean(axis=0)))
        X = [torch.cat(nxt[b], dim=1) for b in range(B)]
    return out


@pytest.mark.parametrize("cell,activation", CASES)
def test_long_lag_norms_match_torch(torch, cell, activation):
    spec, params = model(cell, activation, layers=2)
    x, _, _ = batch(T=8)
    ref = _torch_long_lag(torch, spec, params, x)
    for stream, (sig, fro) in zip(stack_streams(spec, params, x), ref):
        got_sig, got_fro = jacobian_norms(stream)
        np.testing.assert_allclose(got_sig, sig, rtol=1e-6)
        np.testing.assert_allclose(got_fro, fro, rtol=1e-6)
        assert got_sig[-1] == 1.0 and got_fro[-1] == 1.0  # P_{T-1} = I


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_long_lag_norms_of_bidirectional_streams_match_torch(torch, cell):
    spec, params = model(cell, "tanh", layers=2, bidirectional=True, d=4)
    x, _, _ = batch(T=6, B=2)
    ref = _torch_long_lag(torch, spec, params, x)
    streams = stack_streams(spec, params, x)
    assert [s.name for s in streams] == ["layer0", "layer0_reverse", "layer1", "layer1_reverse"]
    for stream, (sig, fro) in zip(streams, ref):
        got_sig, got_fro = jacobian_norms(stream)
        np.testing.assert_allclose(got_sig, sig, rtol=1e-6)
        np.testing.assert_allclose(got_fro, fro, rtol=1e-6)


def test_lanczos_matches_the_svd_on_large_products():
    rng = np.random.default_rng(0)
    P = rng.standard_normal((3, 200, 200)) @ np.diag(np.linspace(0.5, 1.0, 200))  # close top singular values
    sigma, _ = top_singular_values(P, np.ones((3, 200)))
    np.testing.assert_allclose(sigma, np.linalg.norm(P, ord=2, axis=(1, 2)), rtol=1e-9)


@pytest.mark.parametrize("cell,activation", CASES)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_grad_W_hh_by_lag_sums_to_the_gradient(cell, activation, layers, bidirectional):
    """sum_k dW^{(k)} = dL/dW_hh for every stream: the lag split loses and invents nothing."""
    spec, params = model(cell, activation, layers=layers, bidirectional=bidirectional)
    x, target, mask = batch()
    streams = stack_streams(spec, params, x)
    G = stack_direct_gradients(spec, params, streams, target, mask, "mse")
    grads = bptt(spec, params, x, target, mask, "mse").grads
    for s, stream in enumerate(streams):
        total = sum(lag_terms(stream, G[s]))
        np.testing.assert_allclose(total, grads.layers[s].W_hh, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_grad_W_hh_by_lag_matches_torch_per_step_copies(torch, cell):
    """The lag split from its definition: W_hh as a separate copy W^{(s)} at every step s; the loss at step t
    differentiated with respect to W^{(s)} is the term carrying t back to s; lag k sums the pairs t - s = k."""
    spec, params = model(cell, "tanh")
    x, target, mask = batch(T=6, B=2)
    T, B, _ = x.shape
    p = params.layers[0]
    copies = torch.tensor(np.broadcast_to(p.W_hh, (T,) + p.W_hh.shape).copy(), requires_grad=True)
    W_yh, b_y = torch.tensor(params.W_yh), torch.tensor(params.b_y)
    D = p.W_hh.shape[1] * (2 if cell == "lstm" else 1)
    d = p.W_hh.shape[1]

    def losses(Ws):
        out = torch.zeros(T, dtype=torch.float64)
        for b in range(B):
            s = torch.zeros(D, dtype=torch.float64)
            for t in range(T):
                q = type(p)(p.W_hx, None, p.b_h, p.b_hh)
                step = _step_with(torch, cell, q, Ws[t])
                s = step(s, torch.tensor(x[t, b]))
                y = W_yh @ s[:d] + b_y
                out[t] = out[t] + 0.5 * torch.sum((y - torch.tensor(target[t, b])) ** 2) * mask[t, b] / B
        return out

    J = torch.autograd.functional.jacobian(losses, copies).numpy()  # (T_loss, T_step, G d, d)
    expected = [np.sqrt(np.sum(sum(J[s + k, s] for s in range(T - k)) ** 2)) for k in range(T)]
    stream = stack_streams(spec, params, x)[0]
    G = stack_direct_gradients(spec, params, [stream], target, mask, "mse")[0]
    np.testing.assert_allclose(grad_W_hh_by_lag(stream, G), expected, rtol=1e-9, atol=1e-14)


def _step_with(torch, cell, p, W_hh):
    """torch_step with W_hh a tensor that carries gradients."""
    W_hx, b_h = torch.tensor(p.W_hx), torch.tensor(p.b_h)
    d = W_hh.shape[1]

    def step(s, x):
        if cell == "rnn":
            return torch.tanh(W_hx @ x + W_hh @ s + b_h)
        if cell == "lstm":
            z = W_hx @ x + W_hh @ s[:d] + b_h
            i, f, g, o = (torch.sigmoid(z[:d]), torch.sigmoid(z[d : 2 * d]), torch.tanh(z[2 * d : 3 * d]),
                          torch.sigmoid(z[3 * d :]))  # fmt: skip
            c = f * s[d:] + i * g
            return torch.cat([o * torch.tanh(c), c])
        a, u = W_hx @ x + b_h, W_hh @ s + torch.tensor(p.b_hh)
        r, z = torch.sigmoid(a[:d] + u[:d]), torch.sigmoid(a[d : 2 * d] + u[d : 2 * d])
        return (1 - z) * torch.tanh(a[2 * d :] + r * u[2 * d :]) + z * s

    return step


# ------------------------------------------------------------------------------------- the QR method's identities
def test_linear_rnn_exponents_are_log_moduli_of_the_eigenvalues():
    """J_t = W_hh at every step: the exponents are ln |eigenvalues of W_hh| (with multiplicity, complex pairs
    twice), whatever the input."""
    spec, params = model("rnn", "linear", d=8, scale=1.0, seed=5)
    x = np.random.default_rng(2).standard_normal((3000, 1, 3))
    stream = stack_streams(spec, params, x)[0]
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(params.layers[0].W_hh))))[::-1]
    np.testing.assert_allclose(qr_exponents(stream, 8, 500), expected, atol=2e-3)


def test_contracting_tanh_rnn_exponents_are_log_moduli_of_the_eigenvalues():
    """tanh with g = 0.5 and no input: the state decays to 0, where J = W_hh (tanh'(0) = 1)."""
    spec, params = model("rnn", "tanh", d=10, scale=0.25, seed=7)
    for p in params.layers:
        p.b_h[:] = 0
    h0 = np.random.default_rng(3).standard_normal((1, 1, 10))
    stream = stack_streams(spec, params, np.zeros((2500, 1, 3)), h0)[0]
    expected = np.sort(np.log(np.abs(np.linalg.eigvals(params.layers[0].W_hh))))[::-1]
    np.testing.assert_allclose(qr_exponents(stream, 10, 500), expected, atol=3e-3)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sum_of_all_exponents_is_the_mean_log_determinant(cell):
    """sum_i lambda_i = mean_t ln |det J_t| over the measured steps, exactly (Q_t is orthogonal when m = D)."""
    spec, params = model(cell, "tanh", d=6, scale=4.0, seed=11)
    x = np.random.default_rng(4).standard_normal((400, 2, 3))
    stream = stack_streams(spec, params, x)[0]
    warmup, D, N = 100, stream.D, 2
    lam = qr_exponents(stream, D, warmup)
    J = stream.map.jacobian(stream.p, take_steps(stream.caches, N, warmup, 400))  # (steps N, D, D)
    np.testing.assert_allclose(np.sum(lam), np.mean(np.linalg.slogdet(J)[1]), rtol=1e-9)
    assert np.all(np.diff(lam) <= 0)  # descending


def test_nonfinite_parameters_give_nan_not_an_error():
    spec, params = model("rnn", "tanh")
    params.layers[0].W_hh[0, 0] = np.nan
    x, target, mask = batch()
    stream = stack_streams(spec, params, x)[0]
    sigma, fro = jacobian_norms(stream)
    assert np.isnan(sigma[0]) and sigma[-1] == 1.0
    assert np.all(np.isnan(qr_exponents(stream, 2, 2)))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_unit_traces_are_the_states_and_total_gradients_of_example_0(torch, cell):
    """units.npz's rows: h_t and the total dL/dh_t of example 0, against PyTorch autograd (retain_grad on
    every h_t), and the gate activations against the NumPy twin's."""
    from gradscope.engine import reference
    from gradscope.engine.analysis import unit_traces

    spec, params = model(cell, "tanh")
    x, target, mask = batch()
    streams = stack_streams(spec, params, x)
    G = stack_direct_gradients(spec, params, streams, target, mask, "mse")
    row = unit_traces(streams, G)
    p, d = params.layers[0], spec.hidden_size
    step = torch_step(torch, cell, "tanh", p)
    W_yh, b_y = torch.tensor(params.W_yh), torch.tensor(params.b_y)
    s = torch.zeros(d * (2 if cell == "lstm" else 1), dtype=torch.float64, requires_grad=True)
    hs, loss = [], 0.0
    for t in range(x.shape[0]):
        s = step(s, torch.tensor(x[t, 0]))
        h = s[:d]
        h.retain_grad()
        hs.append(h)
        s = torch.cat([h, s[d:]])
        loss = loss + 0.5 * torch.sum((W_yh @ h + b_y - torch.tensor(target[t, 0])) ** 2) / x.shape[1]
    loss.backward()
    np.testing.assert_allclose(row["unit_h"][0], torch.stack(hs).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(row["unit_grad_h"][0], torch.stack([h.grad for h in hs]).numpy(), rtol=1e-9, atol=1e-14)
    if cell != "rnn":
        twin = reference.lstm_forward if cell == "lstm" else reference.gru_forward
        A = twin(x, p)[-2]  # (T, B, G d) gate activations
        np.testing.assert_allclose(row["unit_gates"][0], A[:, 0], rtol=1e-12)
    else:
        assert "unit_gates" not in row


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_seq2seq_streams_lag_split_sums_to_the_gradient(cell, bidirectional):
    """seq2seq plugs in by its streams: encoder, bridge, decoder.  Every stream's lag terms add up to the NumPy
    twin's dL/dW_hh (engine/reference/seq2seq.py), which the encoder streams receive through the bridge only."""
    from gradscope.engine.reference import seq2seq as ref_seq2seq

    spec = ModelSpec(
        cell=cell, activation="tanh", input_size=3, hidden_size=4, layers=2, output_size=2, dtype="float64",
        bidirectional=bidirectional, architecture="seq2seq", decoder_input_size=2,
    )  # fmt: skip
    params = init_params(spec, InitSpec(recurrent_scale=2.0), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, decoder_x = rng.standard_normal((5, 3, 3)), rng.standard_normal((4, 3, 2))
    target, mask = rng.standard_normal((4, 3, 2)), np.ones((4, 3))
    streams = stack_streams(spec, params, x, decoder_x=decoder_x)
    assert [s.name for s in streams] == list(spec.streams)
    assert [s.S.shape[0] for s in streams] == [5] * (len(streams) - 2) + [4, 4]
    G = stack_direct_gradients(spec, params, streams, target, mask, "mse")
    grads = ref_seq2seq.bptt(spec, params, x, decoder_x, target, mask, "mse").grads
    for s, stream in enumerate(streams):
        np.testing.assert_allclose(sum(lag_terms(stream, G[s])), grads.layers[s].W_hh, rtol=1e-10, atol=1e-12)
