"""Learning-rate schedules in isolation, on scripted losses (no training).

The loss-based rule is checked against Lyu & Li, Appendix L.1 written out in closed form: after k
accepted and j rejected epochs, α = α0 · 2^{k/5} / 2^{j/10} (until the cap); an epoch is kept
only if its loss is finite and strictly below the loss before it. The frame relation
η = step · e^{−frame} (DESIGN.md §3) is checked for both schedules.
"""

from __future__ import annotations

import json
import math

import pytest

from marginlab.errors import MarginlabError
from marginlab.train import (
    SCHEDULES,
    ConstantLR,
    LossBasedLR,
    StepSizeUnderflowError,
    make_schedule,
)

NAN, INF = math.nan, math.inf
UP, DOWN = 2 ** (1 / 5), 2 ** (1 / 10)


def _one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    for f in fragments:
        assert f in msg, msg


# ---------------------------------------------------------------------------------------------
# LossBasedLR: the accept/retry/update rule
# ---------------------------------------------------------------------------------------------

# (log loss before, log loss after, kept?) — decrease, increase, equal, NaN, ±inf, tiny decrease
# far below float range, decrease from a NaN-free but huge loss.
SCRIPT = [
    (-1.0, -1.5, True),
    (-1.5, -1.4, False),
    (-1.5, -1.5, False),  # equal loss is not a decrease
    (-1.5, NAN, False),
    (-1.5, INF, False),
    (-1.5, -INF, False),  # an exactly-zero loss is not a finite number: treated as divergence
    (-1.5, -1.5 - 1e-15, True),
    (-4000.0, -4000.5, True),  # log L = −4000: L itself is far below float64's range
    (-4000.5, -4000.5 + 1e-12, False),
    (300.0, 299.0, True),
]


def test_loss_based_rule_matches_closed_form_on_a_script():
    sched = LossBasedLR()
    assert sched.alpha == 0.1
    k = j = 0
    for before, after, kept in SCRIPT:
        assert sched.decide(before, after) is kept, (before, after)
        k, j = (k + 1, j) if kept else (k, j + 1)
        expected = 0.1 * 2.0 ** (k / 5) / 2.0 ** (j / 10)
        assert sched.alpha == pytest.approx(expected, rel=1e-13)
    assert (k, j) == (4, 6)


def test_loss_based_paper_defaults():
    sched = LossBasedLR()
    assert (sched.alpha0, sched.up, sched.down) == (0.1, UP, DOWN)
    assert sched.config() == {"name": "loss_based", "alpha0": 0.1, "up": UP, "down": DOWN,
                              "min_alpha": 1e-9, "max_alpha": 1e2}


@pytest.mark.parametrize("alpha0,up,down", [(0.3, 1.5, 1.25), (2.0, 3.0, 1.01)])
def test_loss_based_custom_factors(alpha0, up, down):
    sched = LossBasedLR(alpha0=alpha0, up=up, down=down, max_alpha=INF)
    pattern = [True, True, False, True, False, False, True]
    k = j = 0
    for kept in pattern:
        after = -2.0 if kept else -0.5
        assert sched.decide(-1.0, after) is kept
        k, j = (k + 1, j) if kept else (k, j + 1)
        assert sched.alpha == pytest.approx(alpha0 * up**k / down**j, rel=1e-13)


def test_loss_based_floor_raises_at_the_first_alpha_below_it():
    alpha0, floor = 1e-8, 1e-9
    # independently: the first j with alpha0 / 2^{j/10} < floor (10·log2(10) = 33.2…)
    j_fail = next(j for j in range(1, 1000) if alpha0 / 2 ** (j / 10) < floor)
    assert j_fail == 34
    sched = LossBasedLR(alpha0=alpha0, min_alpha=floor)
    for _ in range(j_fail - 1):
        assert sched.decide(-3.0, -3.0) is False
    assert sched.alpha >= floor
    with pytest.raises(StepSizeUnderflowError) as exc:
        sched.decide(-3.0 * math.log(10), NAN)
    assert isinstance(exc.value, MarginlabError)
    _one_line_error(exc, "separable", "-3")


def test_loss_based_cap_at_max_alpha():
    sched = LossBasedLR(alpha0=50.0, max_alpha=100.0)
    seen = []
    for step in range(12):
        assert sched.decide(-step, -step - 1.0)
        seen.append(sched.alpha)
    assert max(seen) == 100.0
    # 50·2^{k/5} reaches 100 at k = 5 (up to rounding); from there on α stays at the cap
    assert all(a == 100.0 for a in seen[5:])
    assert seen[3] == pytest.approx(50 * 2 ** (4 / 5), rel=1e-13)
    assert not sched.decide(0.0, 1.0)
    assert sched.alpha == pytest.approx(100.0 / DOWN, rel=1e-15)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"alpha0": 0.0}, "alpha0"),
    ({"alpha0": -1.0}, "alpha0"),
    ({"alpha0": NAN}, "alpha0"),
    ({"up": 1.0}, "up"),
    ({"up": 0.5}, "up"),
    ({"up": NAN}, "up"),
    ({"up": INF}, "up"),
    ({"down": 1.0}, "down"),
    ({"down": 0.9}, "down"),
    ({"down": NAN}, "down"),
    ({"down": INF}, "down"),
    ({"min_alpha": 0.0}, "min_alpha"),
    ({"min_alpha": 0.5}, "min_alpha"),  # above alpha0
    ({"min_alpha": NAN}, "min_alpha"),
    ({"max_alpha": 0.01}, "max_alpha"),
    ({"max_alpha": NAN}, "max_alpha"),
])
def test_loss_based_rejects_invalid_parameters(kwargs, fragment):
    with pytest.raises(MarginlabError) as exc:
        LossBasedLR(**kwargs)
    _one_line_error(exc, fragment)


# ---------------------------------------------------------------------------------------------
# ConstantLR
# ---------------------------------------------------------------------------------------------


def test_constant_keeps_every_finite_epoch_and_redoes_divergence():
    sched = ConstantLR(lr=0.05)
    assert sched.decide(-1.0, -2.0) and sched.decide(-1.0, 5.0) and sched.decide(-1.0, -1.0)
    for bad in (NAN, INF, -INF):
        assert sched.decide(-1.0, bad) is False
    assert math.isnan(sched.alpha)


def test_constant_milestones_multiply_from_their_epoch_on():
    sched = ConstantLR(lr=0.1, milestones={3: 0.5, 5: 0.2})
    expected = {1: 0.1, 2: 0.1, 3: 0.05, 4: 0.05, 5: 0.01, 9: 0.01}
    for epoch, lr in expected.items():
        sched.start_epoch(epoch)
        assert sched.current_lr() == pytest.approx(lr, rel=1e-15)
        assert math.exp(sched.log_lr(-7.0)) == pytest.approx(lr, rel=1e-14)


@pytest.mark.parametrize("kwargs", [{"lr": 0.0}, {"lr": -0.1}, {"lr": NAN}, {"lr": INF},
                                    {"milestones": {3: 0.0}}, {"milestones": {3: NAN}}])
def test_constant_rejects_invalid_parameters(kwargs):
    with pytest.raises(MarginlabError) as exc:
        ConstantLR(**kwargs)
    _one_line_error(exc)


# ---------------------------------------------------------------------------------------------
# The frame: η = step · e^{−frame}
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [0.7, 0.0, -3.0, -50.0, -700.0])
def test_frame_relation(frame):
    """relative_step is the step on R = exp(log L̄_B − frame); log_lr the log of the true η."""
    loss_based = LossBasedLR(alpha0=0.3)
    assert loss_based.relative_step(frame) == 0.3
    assert loss_based.log_lr(frame) == pytest.approx(math.log(0.3) - frame, rel=1e-15)
    # η = α / L̄(t−1) with L̄(t−1) = e^{frame}
    assert math.exp(loss_based.log_lr(frame)) == pytest.approx(
        loss_based.relative_step(frame) * math.exp(-frame), rel=1e-13)
    const = ConstantLR(lr=0.02, milestones={2: 0.5})
    const.start_epoch(2)
    assert const.relative_step(frame) * math.exp(-frame) == pytest.approx(0.01, rel=1e-13)
    assert const.log_lr(frame) == pytest.approx(math.log(0.01), rel=1e-15)


def test_log_lr_beyond_float_range():
    """At log L̄ = −5000 the true rate α/L̄ is e^{5000}: only its log exists in float64."""
    sched = LossBasedLR()
    assert sched.relative_step(-5000.0) == 0.1
    assert sched.log_lr(-5000.0) == pytest.approx(5000.0 + math.log(0.1), rel=1e-15)


# ---------------------------------------------------------------------------------------------
# State and configuration round trips
# ---------------------------------------------------------------------------------------------


def test_loss_based_state_dict_round_trip_through_json():
    a = LossBasedLR(alpha0=0.2)
    for before, after, _ in SCRIPT[:6]:
        a.decide(before, after)
    state = json.loads(json.dumps(a.state_dict()))
    b = LossBasedLR(alpha0=0.2)
    b.load_state_dict(state)
    assert b.alpha == a.alpha
    for before, after, _ in SCRIPT[6:]:
        assert a.decide(before, after) == b.decide(before, after)
        assert a.alpha == b.alpha


@pytest.mark.parametrize("sched", [
    LossBasedLR(alpha0=0.05, up=1.3, down=1.1, min_alpha=1e-7, max_alpha=10.0),
    ConstantLR(lr=0.1, milestones={60: 0.2, 120: 0.2}),
    ConstantLR(lr=0.01),
])
def test_config_round_trip_through_json(sched):
    config = json.loads(json.dumps(sched.config()))
    again = make_schedule(config)
    assert type(again) is type(sched)
    assert again.config() == sched.config()
    assert SCHEDULES[config["name"]] is type(sched)


@pytest.mark.parametrize("config,fragment", [
    ({"name": "cosine"}, "unknown schedule"),
    ({}, "unknown schedule"),
    ({"name": "loss_based", "alpha": 0.1}, "bad parameters"),
    ({"name": "constant", "lr": -1.0}, "learning rate"),
])
def test_make_schedule_errors(config, fragment):
    with pytest.raises(MarginlabError) as exc:
        make_schedule(config)
    _one_line_error(exc, fragment)
