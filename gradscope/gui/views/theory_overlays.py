"""The through-time view's theory overlays: the checkbox label and tooltip of each, and each line's style."""

OVERLAYS = {
    "relu": (
        "ReLU mean field",
        "ReLU RNN with Var(W_hh) = c/d: each step back in time multiplies ||dL/dh_t|| by sqrt(c/2) on "
        "average (half the units pass gradient, W_hh scales its squared norm by c).\nc = 2 keeps it "
        "steady; c = 3 explodes like 1.22^(a-t), c = 1.5 vanishes like 0.87^(a-t).\nDashed, anchored at "
        "the measured gradient at the last scored step a; top layer only.\nDerived for the initial "
        "weights, so drawn at iteration 0 only (during training: the Iteration slider's left end).",
    ),
    "tanh": (
        "tanh / sigmoid mean field",
        "Mean-field prediction for tanh and sigmoid RNNs: gain per step sqrt(c E[f'(z)^2]) with "
        "z ~ N(0, q_t),\nq_t following the forward variance map q_t = c E[f(z)^2] + q_in to its fixed "
        "point q* (q_in: the input's contribution).\nSaturated units (f' ~ 0) make it vanish even when "
        "c > 1.  Dashed, anchored at the last scored step; top layer only.\nDerived for the initial "
        "weights, so drawn at iteration 0 only (during training: the Iteration slider's left end).",
    ),
    "pascanu": (
        "Pascanu bound",
        "Upper bound of Pascanu, Mikolov & Bengio (2013): ||dh_a/dh_t|| <= (gamma sigma_max(W_hh))^(a-t), "
        "gamma = 1 for tanh and relu, 1/4 for sigmoid.\nWhen gamma sigma_max < 1 gradients must vanish; "
        "above 1 they may explode.  Dotted, anchored at the last scored step a, with the current W_hh "
        "(sigma_max of the shown iteration).",
    ),
    "gates": (
        "Gate path (LSTM, GRU)",
        "The gated cells' path through time: an LSTM's cell path dc_t/dc_(t-1) = diag(f_t), a GRU's direct\n"
        "path dh_t/dh_(t-1) ⊃ diag(z_t).  Dashed: sigma(b)^(a-t) from the initial biases (the small-weight\n"
        "limit, gradscope.theory.gates); dotted: the product of the measured mean gate along the path,\n"
        "prod_(j=t+1..a) mean f_j (or z_j).  Both at iteration 0 only: at initialisation the units are alike, so\n"
        "the product of the means stands for the mean of the products (after training a few units with gates\n"
        "near 1 carry the gradient, and it would not).  Anchored at the last scored step a on ||dL/dc_t||\n"
        "(LSTM) or ||dL/dh_t|| (GRU).",
    ),
}
LINE_STYLE = {"relu": "dash", "tanh": "dash", "pascanu": "dot", "gate": "dash", "gate_measured": "dot"}
