"""Architecture rules that import-linter does not state: marginlab modules are imported at the top
of a module, not inside functions (``cli/`` imports inside ``run`` to keep ``--help`` fast), and
the former module paths still import as the modules users know."""

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "marginlab"
# cli/ imports inside run() so that --help stays fast.
EXEMPT = ("cli",)


def _hidden_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("marginlab"):
                found.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.module}")
            elif isinstance(node, ast.Import):
                found += [f"{path.relative_to(SRC.parent)}:{node.lineno} {a.name}"
                          for a in node.names if a.name.startswith("marginlab")]
    return found


def test_no_marginlab_imports_inside_functions_in_library_code():
    files = [p for p in SRC.rglob("*.py") if p.relative_to(SRC).parts[0] not in EXEMPT]
    assert len(files) > 40
    hidden = [h for p in files for h in _hidden_imports(p)]
    assert hidden == []


@pytest.mark.parametrize("old, new, names", [
    ("marginlab.margins", "marginlab.core.margins", ["measure", "MarginStats", "per_sample"]),
    ("marginlab.losses", "marginlab.core.losses", ["get_loss", "log_sum"]),
    ("marginlab.homogeneity", "marginlab.core.homogeneity", ["check", "cached_check"]),
    ("marginlab.storage", "marginlab.io.storage", ["write_json", "read_jsonl"]),
    ("marginlab.plots", "marginlab.io.plots", ["plot_training", "save_figure"]),
    ("marginlab.report", "marginlab.io.report", ["Report", "fmt"]),
    ("marginlab.report", "marginlab.run_report", ["write_run_report", "snapshot_rows"]),
    ("marginlab.kernels", "marginlab.twolayer.margins", ["l1_margin", "l1_margin_1d"]),
    ("marginlab.kernels", "marginlab.twolayer.pricing", ["sup_relu_correlation_1d"]),
    ("marginlab.regularized", "marginlab.twolayer.convex", ["Certificate", "convex_optimum"]),
    ("marginlab.regularized", "marginlab.twolayer.regularized", ["train", "certificate"]),
    ("marginlab.regularized_1d", "marginlab.twolayer.onedim", ["convex_optimum_1d", "train_1d"]),
    ("marginlab.meanfield", "marginlab.twolayer.meanfield", ["simulate", "FlowConfig"]),
    ("marginlab.meanfield", "marginlab.twolayer.reference", ["reference_optimum"]),
])
def test_former_paths_are_the_same_objects(old, new, names):
    a, b = importlib.import_module(old), importlib.import_module(new)
    for name in names:
        assert getattr(a, name) is getattr(b, name)


@pytest.mark.parametrize("module, home, names", [
    ("marginlab.experiments.wei_wd_anneal", "marginlab.experiments.wei_wd_anneal_schedules",
     ["ARMS", "PAPER_WEIGHT_DECAY", "PAPER_WD_MILESTONES", "scale_milestones",
      "cumulative_decay", "paper_cumulative_decay"]),
    ("marginlab.experiments.wei_wd_anneal", "marginlab.experiments.wei_wd_anneal_trial",
     ["data_sets", "resolve", "train_spec", "wd_anneal_trial", "held_out_split"]),
    ("marginlab.experiments.wei_wd_anneal", "marginlab.experiments.wei_wd_anneal_report",
     ["PAPER_TABLE", "PAPER_NAMES", "wd_claim"]),
    ("marginlab.experiments.wei_fig2", "marginlab.experiments.wei_fig2_trial", ["fig2_trial"]),
    ("marginlab.experiments.wei_fig2", "marginlab.experiments.wei_fig2_report", ["FIG2_PANELS"]),
    ("marginlab.experiments.wei_meanfield", "marginlab.experiments.wei_meanfield_report",
     ["meanfield_claims"]),
    ("marginlab.twolayer.meanfield", "marginlab.twolayer.particles",
     ["ParticleMeasure", "objective", "first_variation", "velocity", "outputs"]),
    ("marginlab.analysis.margin_jacobian", "marginlab.analysis.layer_factors", ["FLOAT_BYTES"]),
])
def test_split_modules_keep_their_names(module, home, names):
    """A module split into several still offers every public name it had."""
    a, b = importlib.import_module(module), importlib.import_module(home)
    for name in names:
        assert getattr(a, name) is getattr(b, name)


def test_top_level_nouns():
    import marginlab as ml
    from marginlab.core.margins import measure
    from marginlab.tracker import Tracker
    from marginlab.train.fit import fit

    assert ml.measure is measure and ml.fit is fit and ml.Tracker is Tracker
    assert set(ml.__all__) >= {"measure", "MarginStats", "fit", "Tracker", "data", "models"}


def test_tests_mirror_the_package_layout():
    """Every folder of tests/ names a subpackage or module of marginlab."""
    root = Path(__file__).resolve().parent
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"):
        assert (SRC / folder.name).is_dir() or (SRC / f"{folder.name}.py").is_file(), \
            f"tests/{folder.name} mirrors nothing in src/marginlab"
        assert (folder / "__init__.py").is_file(), f"tests/{folder.name} lacks __init__.py"
