"""Wei, Lee, Liu & Ma, Section 5: perturbed Wasserstein gradient flow escapes a stall.

``wei-meanfield``: a two-layer ReLU network as a measure over neurons θ = (w, u) ∈ ℝ³ on 2-D data
in three angular clusters (labels +, −, + at 90°, 210°, 330°). Every particle starts in a narrow
cone around the neuron (w > 0, u at 270°), between the negative cluster at 210° and the positive one
at 330°. Plain Wasserstein gradient flow (σ = 0) turns the cone onto the 330° cluster and stops
there: no particle ever activates the other two clusters, so it stalls far above L*. The perturbed
flow (5.2) re-draws a fraction ησ of the mass uniformly on S² each step; the fresh particles that
land where L'[ρ] < 0 grow exponentially (Appendix E, Claim E.19) and the flow reaches L* + ε, with
a floor that grows with σ. L* is certified by the convex problem over directions with an exact
dual bound (d = 2). The paper states this as a theorem (Theorem 5.3, E.21) with no figure; the
experiment illustrates it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from marginlab.claims import render_table_html, render_table_md, write_claims
from marginlab.experiments import Experiment, RunRequest, register
from marginlab.experiments.runs import prepare_output
from marginlab.experiments.wei_meanfield_report import (
    meanfield_claims,
    plot_atoms,
    plot_gap,
    report_page,
)
from marginlab.io import storage
from marginlab.progress import Progress
from marginlab.twolayer import meanfield, particles, reference

__all__ = ["cluster_data", "run"]

EXPERIMENT_ID = "wei-meanfield"


def cluster_data(
    n_per_cluster: int, n_clusters: int, spread_deg: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in ℝ² in angular clusters at 90° + 360°k/K, labels alternating +, −, +, …

    Angles are uniform within ±spread_deg of a cluster's center, radii uniform in [0.9, 1.1].
    Returns x (n, 2) and y (n,) float64.
    """
    gen = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for k in range(n_clusters):
        center = math.radians(90 + 360 * k / n_clusters)
        u = torch.rand(n_per_cluster, 2, generator=gen, dtype=torch.float64)
        phi = center + math.radians(spread_deg) * (2 * u[:, 0] - 1)
        r = 0.9 + 0.2 * u[:, 1]
        xs.append(torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1))
        ys.append(torch.full((n_per_cluster,), 1.0 if k % 2 == 0 else -1.0, dtype=torch.float64))
    return torch.cat(xs), torch.cat(ys)


def _stationarity(rho: particles.ParticleMeasure, x, y, lam: float, reduction: str) -> dict:
    """E_ρ‖v[ρ]‖² and min of L'[ρ] over the unit sphere S² (on balanced θ = (±1, ū)/√2, ū on a
    0.1° grid: there the minimum lies when it is negative)."""
    v = particles.velocity(rho, x, y, lam, reduction)
    phi = torch.arange(3600, dtype=torch.float64) * (2 * math.pi / 3600)
    u = torch.stack([torch.cos(phi), torch.sin(phi)], dim=1)
    w = torch.ones(3600, 1, dtype=torch.float64)
    theta = torch.cat([torch.cat([w, u], 1), torch.cat([-w, u], 1)]) / math.sqrt(2)
    lp = particles.first_variation(rho, x, y, lam, theta, reduction)
    i = int(lp.argmin())
    return {
        "final_mean_speed2": float(rho.mass @ (v * v).sum(1)),
        "final_min_first_variation": float(lp[i]),
        "argmin_u_deg": float(torch.rad2deg(phi[i % 3600])),
        "argmin_w_sign": 1 if i < 3600 else -1,
    }


def _first_hit(time_: np.ndarray, gap: np.ndarray, eps: float) -> float | None:
    hit = np.flatnonzero(gap <= eps)
    return float(time_[hit[0]]) if len(hit) else None


def run(request: RunRequest) -> Path:
    """Plain vs perturbed Wasserstein gradient flow from a narrow cone, against a certified L*."""
    s = request.settings
    out = prepare_output(request, EXPERIMENT_ID)
    start = time.perf_counter()
    x, y = cluster_data(s["n_per_cluster"], s["n_clusters"], s["spread_deg"], request.seed)
    lam, reduction = float(s["lam"]), s["reduction"]
    ref = reference.reference_optimum(x, y, lam, reduction=reduction)
    storage.write_json(
        out / "reference.json",
        {
            "value": ref.value,
            "lower_bound": ref.lower_bound,
            "gap": ref.gap,
            "certified": ref.certified,
            "grid_sizes": ref.grid_sizes,
            "grid_values": ref.grid_values,
            "rounds": ref.rounds,
            "dual_ratio": ref.dual_ratio,
            "directions": ref.directions,
            "coefficients": ref.coefficients,
            "seconds": time.perf_counter() - start,
        },
    )

    sigmas = [float(v) for v in s["sigmas"]]
    epsilons = [float(v) for v in s["epsilons"]]
    center = math.radians(s["cone_center_deg"])
    axis = torch.tensor([1.0, math.cos(center), math.sin(center)], dtype=torch.float64)
    trials_path, traj_path = out / "trials.jsonl", out / "trajectories.jsonl"
    if not request.resume:
        trials_path.unlink(missing_ok=True)
        traj_path.unlink(missing_ok=True)
    done = {(r["sigma"], r["seed"]) for r in storage.read_jsonl(trials_path)}
    finals: dict[float, particles.ParticleMeasure] = {}
    jobs = [(sig, request.seed + k) for sig in sigmas for k in range(s["seeds"])]
    for sigma, seed in Progress(EXPERIMENT_ID, total=len(jobs), unit="run").iterate(jobs):
        if (sigma, seed) in done and seed != request.seed:
            continue  # resumed: done (the first seed reruns for the atoms figure)
        rho0 = particles.ParticleMeasure.cone(
            s["n_init"],
            axis,
            math.radians(s["cone_half_angle_deg"]),
            torch.Generator().manual_seed(10_000 + seed),
        )
        cfg = meanfield.FlowConfig(
            lam=lam,
            sigma=sigma,
            eta=s["eta"],
            steps=s["steps"],
            fresh_per_step=s["fresh_per_step"],
            max_particles=s["max_particles"],
            reduction=reduction,
            record_every=s["record_every"],
            seed=seed,
        )
        res = meanfield.simulate(rho0, x, y, cfg, progress=False)
        if seed == request.seed:
            finals[sigma] = res.measure
        if (sigma, seed) in done:
            continue
        t, gap = res.time.numpy(), (res.objective - ref.value).numpy()
        storage.append_jsonl(
            traj_path,
            {
                "sigma": sigma,
                "seed": seed,
                "time": t,
                "gap": gap,
                "n_particles": res.n_particles.numpy(),
            },
        )
        storage.append_jsonl(
            trials_path,
            {
                "sigma": sigma,
                "seed": seed,
                "eta": cfg.eta,
                "steps": cfg.steps,
                "time_to_eps": {f"{e:g}": _first_hit(t, gap, e) for e in epsilons},
                "final_gap": float(gap[-1]),
                "min_gap": float(gap.min()),
                "final_particles": int(res.n_particles[-1]),
                "max_mass_error": float((res.total_mass - 1).abs().max()),
                "pruned_effective_mass": float(res.pruned_effective_mass[-1]),
                "injected_effective_mass": sigma * float(t[-1]),
                "final_second_moment": float(res.second_moment[-1]),
                **_stationarity(res.measure, x, y, lam, reduction),
                "wall_time": res.wall_time,
            },
        )

    trials = storage.read_jsonl(trials_path)
    # A trajectory is written before its trial line, so a resumed run may repeat one: keep the last.
    trajs = list({(r["sigma"], r["seed"]): r for r in storage.read_jsonl(traj_path)}.values())
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    plot_gap(trajs, sigmas, epsilons, plots / "gap.png")
    plot_atoms(finals, ref, x, y, plots / "atoms.png")
    claims = meanfield_claims(trials, ref, sigmas, float(s["claim_eps"]), request.scale)
    write_claims(out, EXPERIMENT_ID, claims)
    report = report_page(request, x, ref, trials, sigmas, epsilons, time.perf_counter() - start)
    report.heading("Claims")
    report.raw(render_table_html(claims), render_table_md(claims))
    return report.write(out)


register(
    Experiment(
        id=EXPERIMENT_ID,
        title="Perturbed Wasserstein gradient flow reaches L* where plain flow stalls",
        reference="Wei, Lee, Liu & Ma, Section 5 (Theorem 5.3, E.21), Appendix E",
        scales={
            "cpu": {
                "n_per_cluster": 20,
                "n_clusters": 3,
                "spread_deg": 15.0,
                "lam": 1e-2,
                "reduction": "sum",
                "n_init": 200,
                "cone_center_deg": 270.0,
                "cone_half_angle_deg": 3.0,
                "eta": 0.02,
                "steps": 3000,
                "sigmas": [0.0, 1e-4, 1e-2, 1e-1],
                "epsilons": [1e-1, 1e-2, 1e-3],
                "fresh_per_step": 1,
                "max_particles": 2000,
                "record_every": 1,
                "seeds": 3,
                "claim_eps": 1e-2,
            },
            "paper": {
                "n_per_cluster": 100,
                "n_clusters": 3,
                "spread_deg": 15.0,
                "lam": 1e-2,
                "reduction": "sum",
                "n_init": 1000,
                "cone_center_deg": 270.0,
                "cone_half_angle_deg": 3.0,
                "eta": 0.004,
                "steps": 20000,
                "sigmas": [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1],
                "epsilons": [1e-1, 1e-2, 1e-3, 1e-4],
                "fresh_per_step": 1,
                "max_particles": 5000,
                "record_every": 10,
                "seeds": 5,
                "claim_eps": 1e-3,
            },
        },
        run=run,
    )
)
