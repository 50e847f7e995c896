"""Training plots keep every series visible and say which ones coincide."""

from marginlab.io import plots


def _recs(values):
    return [{"epoch": e + 1, "log10_loss_mean": v, "normalized_margin_multi": 0.01 * (e + 1),
             "wall_time": float(e)} for e, v in enumerate(values)]


def test_coinciding_series_are_named_and_drawn_with_distinct_styles(tmp_path):
    a = _recs([0.0, -1.0, -2.0, -3.0])
    b = _recs([0.0, -1.001, -2.0, -3.002])  # within 1% of the range 3: hidden under a
    c = _recs([0.0, -0.5, -1.0, -1.5])
    runs = {"constant-bias-none": a, "constant-bias-first": b, "loss_based": c}
    assert plots.coinciding(runs) == [("constant-bias-none", "constant-bias-first")]
    note = plots.coincidence_note(runs)
    assert "constant-bias-none and constant-bias-first" in note
    assert "No two" in plots.coincidence_note({"a": a, "c": c})
    path = plots.plot_training(runs, tmp_path / "t.png")
    assert path.stat().st_size > 10_000
    styles = {(plots._style(i, 4)["ls"], plots._style(i, 4)["marker"]) for i in range(3)}
    assert len(styles) == 3
