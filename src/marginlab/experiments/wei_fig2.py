"""Wei, Lee, Liu & Ma, Figure 2 (Section 6, Appendix F.1): two-layer networks vs the ℓ2 kernel
method as the number of samples n grows.

A random teacher with 6 hidden units labels inputs in d = 20; a two-layer network of width n
trained on the weakly regularized loss (λ = 1e-8) against the ℓ2 kernel method with ReLU
features (the exact arc-cosine kernel, the limit of infinitely many random ReLU features).
Classification: logistic loss vs the hard-margin kernel SVM (Eq. (4.3)), 0-1 test error and the
leading terms of Proposition 3.1 and Lemma 4.2. Regression: squared loss vs minimum ℓ2-norm
kernel interpolation (Eq. (D.4)), squared test error and the terms of Lemmas D.8 and D.9. The
claim (:func:`~.wei_fig_claims.fig2_claims`) is the paired difference kernel − network at the
largest n with its standard error.
"""

from __future__ import annotations

import time
from pathlib import Path

from marginlab.claims import write_claims
from marginlab.experiments import Experiment, RunRequest, register
from marginlab.experiments.runs import prepare_output
from marginlab.experiments.wei_common import raise_failures, run_trials
from marginlab.experiments.wei_fig2_report import FIG2_PANELS, plot_fig2, write_report
from marginlab.experiments.wei_fig2_trial import fig2_trial
from marginlab.experiments.wei_fig_claims import fig2_claims
from marginlab.experiments.wei_generalization import trainer_text, trial_points

# The trial and the report are in wei_fig2_trial and wei_fig2_report; their public names are
# re-exported here.
__all__ = ["FIG2_PANELS", "FIG2_SCALES", "fig2_trial", "run_fig2"]


def run_fig2(request: RunRequest) -> Path:
    """Figure 2: network vs kernel test error and bounds against the sample size n."""
    s = request.settings
    out = prepare_output(request, "wei-fig2")
    start = time.perf_counter()
    ns = [int(n) for n in s["ns"]]
    records = run_trials(out, fig2_trial, trial_points(request, "n", ns, s["trials"]),
                         workers=s["workers"], resume=request.resume, desc="wei-fig2")
    wall = time.perf_counter() - start
    scales = plot_fig2(records, ns, s["tasks"], out / "plots")
    write_claims(out, "wei-fig2", fig2_claims([r for r in records if r.ok], ns, s["tasks"],
                                              request.scale, trainer_text(s)))
    page = write_report(request, out, records, ns, scales, wall)
    raise_failures(records, out)
    return page


FIG2_SCALES = {
    "cpu": {
        "ns": [20, 40, 80, 160], "n": 40, "trials": 10,
        "tasks": ["classification", "regression"],
        "d": 20, "teacher_hidden": 6, "teacher_seed": None, "min_margin": 0.1, "n_test": 2000,
        "lam": 1e-8, "optimizer": "gd", "lam_start": 1e-3, "lam_ratio": 10.0,
        "max_iter": 300, "steps": 20000, "lr": 0.1, "lp_directions": 2000, "workers": 2,
    },
    "paper": {
        "ns": [20, 40, 80, 160, 320, 640], "n": 40, "trials": 100,
        "tasks": ["classification", "regression"], "d": 20, "teacher_hidden": 6,
        "teacher_seed": None, "min_margin": 0.1, "n_test": 10000, "lam": 1e-8,
        "optimizer": "gd", "lam_start": 1e-3, "lam_ratio": 10.0, "max_iter": 300,
        "steps": 20000, "lr": 0.1, "lp_directions": 5000, "workers": 2,
    },
}

register(Experiment(
    id="wei-fig2",
    title="Two-layer network vs ℓ2 kernel method: test error and bounds vs n",
    reference="Wei, Lee, Liu & Ma, Figure 2, Appendix F.1",
    scales=FIG2_SCALES,
    run=run_fig2,
    trial=fig2_trial,
    grid={"cpu": {"n": [20, 40, 80, 160]}, "paper": {"n": [20, 40, 80, 160, 320, 640]}},
))

