"""Every estimator against the exact gradient: bias orders (docs/math.md, sections 3 and 11), exactness, CL and AL limits."""

import numpy as np
import pytest

from hil import exact
from hil.circuits import random_network
from hil.ideal import IdealSubstrate
from hil.rules import make_rule


def rel_error(est, ref):
    return np.linalg.norm(est - ref) / np.linalg.norm(ref)


def estimate(sub, rule, X, Y, kappa):
    rule.configure(kappa)
    return rule.estimate(sub.measure(X, Y, rule.states()))


@pytest.fixture(params=[7, 8, 9])
def fresh(request):
    """A circuit no test was tuned on: 10 nodes, 15 edges (the size of docs/math.md, section 11)."""
    c = random_network(10, 3.0, seed=1000 + request.param)
    r = np.random.default_rng(request.param)
    X, Y = r.uniform(-1, 1, (6, 2)), r.uniform(-0.5, 0.5, (6, 2))
    sub = IdealSubstrate(c)
    kappa = np.linalg.eigvalsh(sub.output_green()).max()
    return c, sub, X, Y, kappa


@pytest.mark.parametrize("rule, order", [("ep", 1), ("ep-sym", 2), ("ep-holo:3", 3), ("ep-holo:4", 4),
                                         ("ep-holo:6", 6)])
def test_halving_beta_divides_the_error_by_two_to_the_order(fresh, rule, order):
    c, sub, X, Y, kappa = fresh
    ref = exact.gradient(c, X, Y)
    errs = [rel_error(estimate(sub, make_rule(rule, f / kappa), X, Y, kappa), ref) for f in (0.1, 0.05, 0.025)]
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    slopes = np.log2(ratios)
    assert np.all(np.abs(slopes - order) < 0.2), (rule, errs, slopes)


def test_ep_holo_two_points_is_symmetric_ep(fresh):
    c, sub, X, Y, kappa = fresh
    b = 0.1 / kappa
    np.testing.assert_allclose(estimate(sub, make_rule("ep-holo:2", b), X, Y, kappa),
                               estimate(sub, make_rule("ep-sym", b), X, Y, kappa), rtol=1e-9)


@pytest.mark.parametrize("f", [0.01, 1.0, 30.0])
def test_open_loop_symmetric_ep_is_exact_at_any_beta(fresh, f):
    c, sub, X, Y, kappa = fresh
    ref = exact.gradient(c, X, Y)
    assert rel_error(estimate(sub, make_rule("ep-open", f / kappa), X, Y, kappa), ref) < 1e-10


def test_open_loop_one_sided_bias_is_half_beta_dlambda_squared(fresh):
    c, sub, X, Y, kappa = fresh
    from hil.substrate import Free, Nudge
    from hil.rules import cocontent
    beta = 0.5 / kappa
    m = sub.measure(X, Y, [Free(), Nudge(beta, open_loop=True)])
    one_sided = np.mean(cocontent(m, Nudge(beta, True)) - cocontent(m, Free()), axis=0) / beta
    dlam = c.drops(exact.adjoint_state(c, X, Y))
    np.testing.assert_allclose(one_sided - exact.gradient(c, X, Y), np.mean(beta / 2 * dlam ** 2, axis=0),
                               rtol=1e-8, atol=1e-12)


def test_gd_is_exact(fresh):
    c, sub, X, Y, kappa = fresh
    assert rel_error(estimate(sub, make_rule("gd"), X, Y, kappa), exact.gradient(c, X, Y)) < 1e-12


def test_al_converges_to_the_gradient_at_first_order(fresh):
    c, sub, X, Y, kappa = fresh
    ref = exact.gradient(c, X, Y)
    errs = [rel_error(estimate(sub, make_rule("al", eta), X, Y, kappa), ref) for eta in (0.1, 0.05)]
    assert abs(np.log2(errs[0] / errs[1]) - 1) < 0.05
    # the first-order term is exactly (eta / 2 kappa) dlambda^2
    eta = 0.1
    dlam = c.drops(exact.adjoint_state(c, X, Y))
    np.testing.assert_allclose(estimate(sub, make_rule("al", eta), X, Y, kappa) - ref,
                               np.mean(eta / (2 * kappa) * dlam ** 2, axis=0), rtol=1e-7, atol=1e-12)


def test_cl_converges_to_the_k_weighted_direction_not_grad_c(fresh):
    """Small eta: ghat_CL -> mean_i J_i^T K^-1 r_i (descends L_K = 1/2 r^T K^-1 r), not dC/dg."""
    c, sub, X, Y, kappa = fresh
    K = exact.output_green(c)
    J = exact.jacobian(c, X)
    r = (exact.free_state(c, X)[:, list(c.outputs)] - Y)
    target = J.T @ np.linalg.solve(K, r.T).T.ravel() / len(X)
    errs = [rel_error(estimate(sub, make_rule("cl", eta), X, Y, kappa), target) for eta in (0.02, 0.01)]
    assert errs[1] < 0.05 and abs(np.log2(errs[0] / errs[1]) - 1) < 0.1
    assert rel_error(estimate(sub, make_rule("cl", 0.01), X, Y, kappa), exact.gradient(c, X, Y)) > 0.05


def test_rule_errors():
    with pytest.raises(ValueError, match="unknown rule 'sgd'"):
        make_rule("sgd")
    with pytest.raises(ValueError, match="nudge must be a positive finite number"):
        make_rule("ep", -1.0)
    with pytest.raises(ValueError, match="points must be a positive integer"):
        make_rule("ep-holo", 1e-3, 0)
    with pytest.raises(ValueError, match="points after ':' must be a positive integer"):
        make_rule("ep-holo:x")
