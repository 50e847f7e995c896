"""Claims as data: verdict rules and the claims.json round trip."""

import math

import pytest
from scipy import stats

from marginlab.claims import (
    Claim,
    by_certificate,
    by_effect,
    not_testable,
    paired_effect,
    read_claims,
    render_table_html,
    render_table_md,
    write_claims,
)


def test_effect_rule_needs_three_standard_errors():
    assert by_effect("c", "s", "p", "m", 3.01, 1.0).verdict == "reproduced"
    assert by_effect("c", "s", "p", "m", 2.99, 1.0).verdict == "partly"
    assert by_effect("c", "s", "p", "m", -5.0, 1.0).verdict == "not reproduced"
    assert by_effect("c", "s", "p", "m", 1.0, 0.0).verdict == "partly"
    assert by_effect("c", "s", "p", "m", 1.0, math.nan).verdict == "partly"
    assert by_effect("c", "s", "p", "m", math.nan, 1.0).verdict == "not reproduced"


def test_paired_effect_matches_scipy():
    d = [0.3, -0.1, 0.5, 0.2, 0.4, 0.05]
    mean, se = paired_effect(d)
    assert mean == pytest.approx(sum(d) / len(d), abs=1e-15)
    assert se == pytest.approx(stats.sem(d), rel=1e-12)
    assert math.isnan(paired_effect([1.0])[1])


def test_round_trip_and_tables(tmp_path):
    claims = [by_effect("γ̃ rises", "Lyu & Li, Thm 4.1", "monotone", "0.1 ± 0.01", 0.1, 0.01),
              by_certificate("gap", "Wei, Fig 4", "→ 0", "1e-9", True, "duality gap ≤ 1e-6"),
              not_testable("CIFAR", "Lyu & Li, Fig 1", "8x", "needs CIFAR files (--root)")]
    path = write_claims(tmp_path, "exp-a", claims)
    back = read_claims(path)
    assert [c.verdict for c in back] == ["reproduced", "reproduced", "not testable at this scale"]
    assert all(c.experiment == "exp-a" for c in back)
    md = render_table_md(back, {"exp-a": "exp-a/report.html"})
    assert md.count("\n") == 5 and "[exp-a](exp-a/report.html)" in md
    page = render_table_html(back)
    assert page.count("<tr>") == 4 and "&" not in "γ̃"


def test_bad_verdict_is_refused():
    with pytest.raises(ValueError):
        Claim("c", "s", "p", "m", None, None, "crit", "probably")
