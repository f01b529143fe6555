"""Closed-form checks of the landscape lab's toys (landscapes, optimisers, physics, saddle test)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, kstest

from flatminima import Objective, curvature
from flatminima.errors import FlatminimaError
from flatminima.toy import (
    cooling_schedule,
    find_critical_points,
    get,
    golden_section,
    newton,
    optimize,
    replica_exchange,
    saddle_test,
    simulated_annealing,
)
from flatminima.toy import physics as ph


def _dw(x):
    return (np.asarray(x) ** 2 - 1) ** 2


# --- landscapes --------------------------------------------------------------------------------------------


def test_rosenbrock_hessian_and_lanczos_agree_with_closed_form():
    land = get("rosenbrock")
    H = land.hessian(torch.ones(2))
    assert torch.allclose(H, torch.tensor([[802.0, -400.0], [-400.0, 200.0]], dtype=torch.float64))
    top = curvature.eigenvalues(land.objective(torch.ones(2)), 1).values[0]
    assert float(top) == pytest.approx(501 + math.sqrt(301**2 + 400**2), rel=1e-8)


def test_double_well_equal_depth_sharp_and_flat():
    c = 0.9
    land = get("double_well", c=c)
    assert float(land(torch.tensor([1.0]))) == pytest.approx(0, abs=1e-15)
    assert float(land(torch.tensor([-1.0]))) == pytest.approx(0, abs=1e-15)
    assert land.grad(torch.tensor([[1.0], [-1.0]])).abs().max() < 1e-12
    sharp, flat = float(land.hessian(torch.tensor([1.0]))), float(land.hessian(torch.tensor([-1.0])))
    assert sharp == pytest.approx(8 * (1 + c * math.tanh(1)), rel=1e-10)
    assert flat == pytest.approx(8 * (1 - c * math.tanh(1)), rel=1e-10)


def test_saddles_hessians():
    assert torch.allclose(
        get("monkey_saddle").hessian(torch.zeros(2)), torch.zeros(2, 2, dtype=torch.float64)
    )
    assert torch.allclose(
        get("degenerate_saddle").hessian(torch.zeros(2)),
        torch.diag(torch.tensor([1.0, 0.0], dtype=torch.float64)),
    )
    ev = torch.linalg.eigvalsh(get("saddle").hessian(torch.zeros(2)))
    assert torch.allclose(ev, torch.tensor([-1.0, 1.0], dtype=torch.float64))


def test_critical_points_of_random_field_are_critical_with_exact_index():
    land = get("random_field", dim=3, features=16, seed=1)
    cps = find_critical_points(land, 40, iters=40, seed=0)
    assert len(cps) >= 3
    for cp in cps[:5]:
        x = torch.as_tensor(cp.x)
        assert float(land.grad(x[None]).norm()) < 1e-8
        assert cp.index == int((torch.linalg.eigvalsh(land.hessian(x)) < 0).sum())
    assert min(cp.index for cp in cps) == 0  # the minima are found too


def test_unknown_landscape_lists_known():
    with pytest.raises(FlatminimaError, match="rosenbrock"):
        get("himmelblau")


# --- optimisers --------------------------------------------------------------------------------------------


def test_newton_quadratic_at_simple_minimum():
    # f = x² + x³/3: Newton gives x⁺ = x²/(2 + 2x), so e_{k+1}/e_k² → 1/2 exactly
    xs = newton(lambda x: (x**2 + x**3 / 3).sum(-1), [0.2], steps=4)[:, 0]
    ratios = xs[1:] / xs[:-1] ** 2
    assert ratios[-1] == pytest.approx(0.5, rel=1e-3)
    assert np.all(np.abs(ratios - 0.5) < 0.15)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_newton_linear_at_multiple_root(m):
    # f = x^{m+1}: f′ has a root of multiplicity m at 0, Newton contracts by (m−1)/m per step
    xs = newton(lambda x: (x ** (m + 1)).sum(-1), [0.7], steps=8)[:, 0]
    assert np.allclose(xs[1:] / xs[:-1], (m - 1) / m, rtol=1e-9)


def test_noise_loss_rise_is_half_sigma2_trace():
    gen = torch.Generator().manual_seed(0)
    B = torch.randn(10, 10, generator=gen, dtype=torch.float64)
    A = B @ B.T / 10 + torch.eye(10, dtype=torch.float64)
    sigma, n = 0.1, 20000
    delta = sigma * torch.randn(n, 10, generator=gen, dtype=torch.float64)
    rise = 0.5 * torch.einsum("ni,ij,nj->n", delta, A, delta)
    expected = 0.5 * sigma**2 * float(torch.trace(A))
    se = float(rise.std()) / math.sqrt(n)
    assert abs(float(rise.mean()) - expected) < 4 * se
    obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.zeros(10), dtype=torch.float64)
    tr = curvature.trace(obj, method="hutch++", samples=30).value
    assert tr == pytest.approx(float(torch.trace(A)), rel=1e-6)  # exact at probes ≥ dim


def test_langevin_escape_matches_exact_mfpt_and_kramers():
    T = 0.3
    times = ph.first_passage_times(_dw, -1.0, 1.0, T, walkers=600, dt=0.01, seed=3)
    assert not np.isnan(times).any()
    exact = ph.mfpt_exact(_dw, -1.0, 1.0, T)
    se = times.std() / math.sqrt(len(times))
    assert abs(times.mean() - exact) < 4 * se + 0.05 * exact  # 5 % allowance for the dt = 0.01 bias
    kramers = 1 / ph.kramers_rate(_dw, -1.0, 0.0, T)
    assert kramers == pytest.approx(exact, rel=0.2)  # Kramers is the ΔU/T → ∞ asymptote (ΔU/T = 3.3 here)


def test_langevin_stationary_law_is_gibbs():
    T = 0.5
    x = ph.langevin_1d(_dw, np.full(3000, -1.0), T, 0.01, 3000, seed=1)  # 30 time units ≫ escape time ≈ 6
    assert kstest(x, ph.gibbs_cdf(_dw, T)).pvalue > 1e-3
    # and it is not the Gibbs law of a different temperature (the test has power)
    assert kstest(x, ph.gibbs_cdf(_dw, 0.25)).pvalue < 1e-3
    # torch path: the same sampler through optimize(method="langevin")
    land = get("double_well", c=0.0)
    tr = optimize(
        land, torch.full((1000, 1), -1.0), "langevin", steps=3000, lr=0.01, temperature=T, record_every=3000
    )
    assert kstest(tr.final[:, 0].numpy(), ph.gibbs_cdf(_dw, T)).pvalue > 1e-3


def test_adagrad_step_shrinks_as_inverse_sqrt_t_rmsprop_does_not():
    def f(x):
        return 1e-4 * x.sum(-1)  # a tilted plateau: constant tiny gradient

    ada = optimize(f, [0.0], "adagrad", steps=400, lr=0.1).step_sizes[:, 0].numpy()
    rms = optimize(f, [0.0], "rmsprop", steps=400, lr=0.1).step_sizes[:, 0].numpy()
    t = np.arange(1, 401)
    assert np.allclose(ada, 0.1 / np.sqrt(t), rtol=1e-3)  # |g|/√(t g²) = 1/√t
    assert np.allclose(rms[50:], 0.1, rtol=1e-2)  # |g|/√(g²(1−ρᵗ)) → 1


def test_plateau_adam_crosses_where_gd_stalls():
    land = get("plateau")
    gd = optimize(land, land.x0, "gd", steps=300, lr=0.1)
    adam = optimize(land, land.x0, "adam", steps=300, lr=0.1)
    assert float(gd.losses[-1]) > 0.99 and float(adam.losses[-1]) < 1e-3


def test_golden_section_value_rule_cheaper_in_flat_valley():
    by_interval = golden_section(lambda x: x**4, -1.0, 2.0, rule="interval", xtol=1e-8)
    by_value = golden_section(lambda x: x**4, -1.0, 2.0, rule="value", ftol=1e-8)
    # interval rule needs ⌈log(3/1e-8)/log φ⌉ shrinks whatever the function
    assert by_interval.evaluations == pytest.approx(math.log(3e8) / math.log((1 + 5**0.5) / 2) + 2, abs=2)
    assert by_value.evaluations < by_interval.evaluations / 2
    assert abs(by_value.x) < 0.02 and by_value.value < 1e-7


def test_annealing_and_replica_exchange_and_bad_input():
    land = get("double_well", c=0.5)
    sa = simulated_annealing(land, [-1.0], t0=1.0, rate=0.99, steps=500, step_size=0.3, walkers=200)
    assert sa.temperatures[-1] == pytest.approx(0.99**499)
    assert float(sa.final_values.mean()) < 0.05
    re = replica_exchange(land, [-1.0], [0.05, 0.2, 0.5, 1.0], sweeps=1500, step_size=0.3)
    assert np.all((re.exchange_rates > 0) & (re.exchange_rates <= 1))
    assert re.total_round_trips >= 1
    with pytest.raises(FlatminimaError, match="cooling rate"):
        cooling_schedule(1.0, 1.5, 10)
    with pytest.raises(FlatminimaError, match="temperature"):
        optimize(land, [0.0], "langevin", temperature=-1.0)
    with pytest.raises(FlatminimaError, match="temperature"):
        ph.first_passage_times(_dw, -1, 1, -0.1)
    with pytest.raises(FlatminimaError, match="temperatures"):
        replica_exchange(land, [0.0], [-1.0, 1.0])


# --- physics -----------------------------------------------------------------------------------------------


def test_berry_graph_is_desargues():
    nodes, A = ph.berry_graph()
    assert len(nodes) == 20 and A.sum() == 60 and np.all(A.sum(1) == 3) and np.all(A == A.T)
    ev = np.round(np.linalg.eigvalsh(A)).astype(int)
    assert sorted(ev) == sorted([3, -3] + [2] * 4 + [-2] * 4 + [1] * 5 + [-1] * 5)
    assert ph.simulate_ligand(1.0, 40.0, walkers=300) == pytest.approx(0.4, abs=0.02)


def test_nmr_sites_resolved_slow_averaged_fast():
    f = np.linspace(-300, 300, 601)
    assert ph.count_peaks(ph.nmr_spectrum(1.0, 200.0, f)) == 2
    assert ph.count_peaks(ph.nmr_spectrum(1e4, 200.0, f)) == 1
    assert ph.hop_rate(300.0) > ph.hop_rate(100.0)


def test_two_basin_temperature_and_seed():
    m = ph.TwoBasinModel()
    assert m.fibril_fraction(0.1) > 0.5 > m.fibril_fraction(2.0)  # enthalpy wins cold, entropy wins hot
    assert m.fibril_fraction(0.05) == pytest.approx(m.harmonic_fibril_fraction(0.05), abs=0.02)
    assert ph.TwoBasinModel(seed=0.3).conversion_rate(0.3) > 1.5 * m.conversion_rate(0.3)


# --- saddle test -------------------------------------------------------------------------------------------


def test_saddle_test_power_and_error_rate():
    alpha, reps = 0.05, 60
    kw = dict(sigma=0.05, n=12, steps=10, lr=0.3, alpha=alpha, loss_noise=1e-3)
    x0 = torch.zeros(2, dtype=torch.float64)
    false_alarms = sum(
        saddle_test(get("quartic", dim=2).f, x0, seed=s, **kw).verdict == "saddle" for s in range(reps)
    )
    # the sign test's size is ≤ α: allow the 99.9 % binomial upper bound
    assert false_alarms <= binom.ppf(0.999, reps, alpha)
    detected = sum(saddle_test(get("saddle").f, x0, seed=s, **kw).verdict == "saddle" for s in range(20))
    assert detected >= 19
    res = saddle_test(get("degenerate_saddle").f, x0, sigma=0.1, n=20, steps=100, lr=0.3)
    assert res.verdict == "saddle"  # Hessian is PSD here, yet the noise test sees the saddle
    assert saddle_test(get("sphere").f, x0, n=20).p_value == 1.0
