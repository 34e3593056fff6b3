"""The ideal substrate and the reference formulas against Kirchhoff's laws, finite
differences and the exact identities of docs/math.md (sections 1 to 5)."""

import numpy as np
import pytest

from hil import exact
from hil.circuits import lattice
from hil.ideal import IdealSubstrate
from hil.substrate import Adjoint, AdjointClamp, Clamp, Free, Nudge


def kcl_residual(c, g, V):
    """Net current leaving each free node (A): zero where Kirchhoff's current law holds."""
    I = g * c.drops(V)  # edge current a -> b
    net = np.zeros(V.shape[:-1] + (c.n,), dtype=V.dtype)
    np.add.at(net.T, c.a, I.T)
    np.subtract.at(net.T, c.b, I.T)
    return net[..., c.free]


def test_free_state_obeys_kirchhoff(net):
    c, X, _ = net
    V = IdealSubstrate(c).measure(X, np.zeros((len(X), 2)), [Free()])[Free()]
    np.testing.assert_allclose(V[:, c.sources], np.column_stack([np.zeros(len(X)), X]))
    scale = np.abs(c.g).max() * np.abs(X).max()
    assert np.abs(kcl_residual(c, c.g, V)).max() < 1e-12 * scale


def test_adjoint_gradient_matches_central_finite_differences(net):
    c, X, Y = net
    grad = exact.gradient(c, X, Y)
    fd = np.zeros(c.m)
    for e in range(c.m):
        h = 1e-5 * c.g[e]
        gp, gm = c.g.copy(), c.g.copy()
        gp[e] += h
        gm[e] -= h
        fd[e] = (exact.loss(c, X, Y, gp) - exact.loss(c, X, Y, gm)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


def test_jacobian_matches_finite_differences_and_scale_invariance(net):
    c, X, _ = net
    J = exact.jacobian(c, X)
    e = 3
    h = 1e-6 * c.g[e]
    gp, gm = c.g.copy(), c.g.copy()
    gp[e] += h
    gm[e] -= h
    dVO = (exact.free_state(c, X, gp) - exact.free_state(c, X, gm))[:, list(c.outputs)] / (2 * h)
    np.testing.assert_allclose(J[:, e], dVO.ravel(), rtol=1e-6, atol=1e-9 * np.abs(J).max())
    # V(c g) = V(g)  =>  J g = 0
    assert np.abs(J @ c.g).max() < 1e-12 * np.abs(J).max() * np.abs(c.g).max() * c.m
    np.testing.assert_allclose(exact.free_state(c, X, 7.3 * c.g), exact.free_state(c, X))


def test_closed_loop_nudge_matches_closed_form_and_kirchhoff(net):
    c, X, Y = net
    sub = IdealSubstrate(c)
    K = sub.output_green()
    for beta in (0.3 / np.linalg.eigvalsh(K).max(), 1e-3, 0.2j / np.linalg.eigvalsh(K).max()):
        V = sub.measure(X, Y, [Nudge(beta)])[Nudge(beta)]
        np.testing.assert_allclose(V[:, list(c.outputs)], exact.nudged_state_closed_form(c, X, Y, beta),
                                   rtol=1e-10, atol=1e-12)
        # KCL with the nudge resistor: net current out of each output = beta (y - V_O)
        res = kcl_residual(c, c.g, V)
        res[:, c.out_in_free] -= beta * (Y - V[:, list(c.outputs)])
        assert np.abs(res).max() < 1e-12 * c.g.max()


def test_open_loop_nudge_and_adjoint_identities(net):
    c, X, Y = net
    sub = IdealSubstrate(c)
    beta = 2e-3
    m = sub.measure(X, Y, [Free(), Nudge(beta, open_loop=True), Adjoint()])
    lam = exact.adjoint_state(c, X, Y)
    np.testing.assert_allclose(m[Adjoint()], lam, rtol=1e-10, atol=1e-12 * np.abs(lam).max())
    # V^beta = V - beta lambda exactly
    np.testing.assert_allclose(m[Nudge(beta, True)], m[Free()] - beta * lam, rtol=1e-10, atol=1e-12)


def test_cl_clamp_identities(net):
    """V^C = V - eta mu with mu_F = L_FF^-1 P^T K^-1 r, and P^C - P^F = eta^2 L_K.

    The power P of docs/math.md, section 4, is the co-content E = 1/2 sum g dV^2 (half the dissipated power):
    the full power difference is 2 eta^2 L_K.
    """
    c, X, Y = net
    sub = IdealSubstrate(c)
    eta = 0.3
    m = sub.measure(X, Y, [Free(), Clamp(eta)])
    K = exact.output_green(c)
    r = m.residual
    # mu: ground the sources, inject K^-1 r at the outputs
    mu = IdealSubstrate(c).measure(np.zeros_like(X), -np.linalg.solve(K, r.T).T, [Adjoint()])[Adjoint()]
    np.testing.assert_allclose(m[Clamp(eta)], m[Free()] - eta * mu, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m[Clamp(eta)][:, list(c.outputs)],
                               m[Free()][:, list(c.outputs)] + eta * (Y - m[Free()][:, list(c.outputs)]))
    power = lambda V: 0.5 * np.sum(c.g * c.drops(V) ** 2, axis=1)
    LK = 0.5 * np.einsum("bi,ij,bj->b", r, np.linalg.inv(K), r)
    np.testing.assert_allclose(power(m[Clamp(eta)]) - power(m[Free()]), eta ** 2 * LK, rtol=1e-8)


def test_al_clamp_is_free_minus_scaled_adjoint(net):
    c, X, Y = net
    sub = IdealSubstrate(c)
    kappa = np.linalg.eigvalsh(sub.output_green()).max()
    eta = 0.4
    m = sub.measure(X, Y, [Free(), AdjointClamp(eta, kappa)])
    np.testing.assert_allclose(m[AdjointClamp(eta, kappa)], m[Free()] - eta / kappa * exact.adjoint_state(c, X, Y),
                               rtol=1e-9, atol=1e-12)


def test_measured_green_matrix_matches_exact(net):
    c, _, _ = net
    sub = IdealSubstrate(c)
    from hil.substrate import Substrate
    np.testing.assert_allclose(Substrate.output_green(sub), exact.output_green(c), rtol=1e-10)
    ev = np.linalg.eigvalsh(exact.output_green(c))
    assert ev.min() > 0  # symmetric positive definite


def test_sparse_and_dense_paths_agree():
    c = lattice(12, 12, seed=3)
    rng = np.random.default_rng(0)
    X, Y = rng.uniform(-1, 1, (4, 2)), rng.uniform(-1, 1, (4, 2))
    states = [Free(), Nudge(1e-3), Nudge(2e-3j), Clamp(0.2), Adjoint()]
    dense = IdealSubstrate(c, dense_limit=10_000).measure(X, Y, states)
    sparse = IdealSubstrate(c, dense_limit=10).measure(X, Y, states)
    assert not IdealSubstrate(c, dense_limit=10).factorization().dense
    for s in states:
        np.testing.assert_allclose(sparse[s], dense[s], rtol=1e-9, atol=1e-12)


def test_write_rejects_non_positive_conductance(net):
    c, _, _ = net
    sub = IdealSubstrate(c)
    g = c.g.copy()
    g[4] = 0.0
    with pytest.raises(ValueError, match=f"edge '{c.edge_names[4]}': conductance 0.0 is not a positive finite"):
        sub.write(g)


def test_complex_nudge_refused_where_unsupported(net):
    from hil.substrate import SubstrateError

    c, X, Y = net

    class RealOnly(IdealSubstrate):
        supports_complex = False

    with pytest.raises(SubstrateError, match="cannot realise a complex nudge"):
        RealOnly(c).measure(X, Y, [Nudge(1e-3j)])
