"""homogeneity.check on the zoo, on user-built models and on known non-homogeneous ones
(DESIGN.md §1). Expected orders are known by construction (number of layers, or a closed-form
exponent), and verified here directly from Φ(cθ) = c^L Φ(θ) where they are not obvious."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from marginlab import homogeneity, models
from marginlab.errors import MarginlabError

TOL = 1e-6


def _images(n=8, c=1, hw=28, seed=1):
    return torch.rand(n, c, hw, hw, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bias", ["none", "first"])
def test_mnist_cnn_homogeneous_of_order_4(bias):
    report = homogeneity.check(models.mnist_cnn(bias, seed=0), _images())
    assert report.is_homogeneous and report.is_multi_homogeneous
    assert report.order == 4.0
    assert report.layer_orders == {"conv1": 1.0, "conv2": 1.0, "fc1": 1.0, "fc2": 1.0}
    assert report.max_residual < 1e-12
    assert all(r < 1e-12 for r in report.group_residuals.values())
    assert report.ungrouped == ()
    first = ("conv1.weight", "conv1.bias") if bias == "first" else ("conv1.weight",)
    assert report.groups["conv1"] == first
    assert report.summary().splitlines()[0].startswith("homogeneous of order 4 ")


def test_mnist_cnn_with_all_biases_is_not_homogeneous():
    """Its biases are zero at initialization; the check must still see them."""
    model = models.mnist_cnn("all", seed=0)
    assert all(float(p.detach().abs().max()) == 0 for n, p in model.named_parameters()
               if "bias" in n)
    report = homogeneity.check(model, _images())
    assert not report.is_homogeneous and not report.is_multi_homogeneous
    assert report.max_residual > 1e-3
    assert set(report.ungrouped) == {"conv2.bias", "fc1.bias", "fc2.bias"}
    assert all(k is None for k in report.layer_orders.values())
    summary = report.summary()
    assert summary.startswith("not homogeneous (worst residual ")
    assert "in no group: conv2.bias, fc1.bias, fc2.bias" in summary


def test_mlp_with_three_layers_has_order_3():
    model = models.mlp(20, [16, 12], 5, seed=2)
    report = homogeneity.check(model, torch.randn(8, 20, generator=torch.Generator()
                                                  .manual_seed(0)))
    assert report.is_multi_homogeneous and report.order == 3.0
    assert report.layer_orders == {"fc1": 1.0, "fc2": 1.0, "fc3": 1.0}
    leaky = models.mlp(20, [16, 12], 5, activation="leaky_relu", seed=2)
    assert homogeneity.check(leaky, torch.randn(8, 20)).order == 3.0


def _user_cnn():
    """Bias-free conv – LeakyReLU – AvgPool – conv – LeakyReLU – linear: order 3."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.LeakyReLU(0.2), nn.AvgPool2d(2),
        nn.Conv2d(4, 3, 3, bias=False), nn.LeakyReLU(0.05), nn.Flatten(),
        nn.Linear(3 * 2 * 2, 3, bias=False),
    )


def test_user_built_cnn_is_homogeneous_with_the_right_order():
    torch.manual_seed(0)
    model = _user_cnn()
    x = torch.randn(8, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    report = homogeneity.check(model, x)
    assert report.is_multi_homogeneous and report.order == 3.0
    assert report.layer_orders == {"0": 1.0, "3": 1.0, "6": 1.0}
    # the definition, directly: Φ(2.5θ) = 2.5³ Φ(θ)
    probe = _user_cnn().double()
    probe.load_state_dict(model.state_dict())
    base = probe(x.double())
    with torch.no_grad():
        for p in probe.parameters():
            p.mul_(2.5)
    torch.testing.assert_close(probe(x.double()), 2.5**3 * base, rtol=1e-12, atol=0)


class _FractionalDegree(nn.Module):
    """Φ(w; x) = (wᵀx)·‖w‖^{1/2}: homogeneous of order 1.5 (not an integer)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return (x @ self.w * self.w.norm().sqrt()).unsqueeze(1)


def test_fractional_order_is_fitted_not_rounded():
    report = homogeneity.check(_FractionalDegree(), torch.randn(8, 4))
    assert report.is_homogeneous
    assert report.order == pytest.approx(1.5, abs=1e-10)
    assert report.layer_orders == {}  # no Linear/Conv layer: no default group


@pytest.mark.parametrize("kind", ["tanh", "later bias", "first-layer bias, linear output"])
def test_non_homogeneous_models_report_a_residual(kind):
    if kind == "tanh":
        model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.Linear(8, 2, bias=False))
    elif kind == "later bias":
        model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 2))
    else:  # Φ = W2 relu(W1 x + b1) + b2 with b2: the extra bias breaks it
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2, bias=True))
    report = homogeneity.check(model, torch.randn(8, 6, generator=torch.Generator()
                                                  .manual_seed(0)))
    assert not report.is_homogeneous
    assert TOL < report.max_residual < math.inf
    assert "not homogeneous (worst residual" in report.summary()


def test_custom_groups():
    model = models.mlp(10, [8, 6], 3, seed=4)
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(1))
    groups = {"front": ["fc1.weight", "fc2.weight"], "back": ["fc3.weight"]}
    report = homogeneity.check(model, x, groups)
    assert report.order == 3.0 and report.is_multi_homogeneous
    assert report.layer_orders == {"front": 2.0, "back": 1.0}
    assert report.groups == {"front": ("fc1.weight", "fc2.weight"), "back": ("fc3.weight",)}
    # a partial grouping: homogeneous, but not multi-homogeneous over the groups
    partial = homogeneity.check(model, x, {"only": ["fc2.weight"]})
    assert partial.is_homogeneous and not partial.is_multi_homogeneous
    assert partial.layer_orders == {"only": 1.0}
    assert partial.ungrouped == ("fc1.weight", "fc3.weight")


def test_unknown_group_parameter_names_raise():
    model = models.mlp(10, [8], 3)
    with pytest.raises(MarginlabError, match=r"group 'g' names unknown parameters: fc9\.weight"):
        homogeneity.check(model, torch.randn(4, 10), {"g": ["fc1.weight", "fc9.weight"]})


def test_check_leaves_the_model_alone():
    model = models.mlp(10, [8], 3, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    homogeneity.check(model, torch.randn(4, 10))
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v)
               for k, v in before.items())


def test_models_the_check_cannot_fit_raise():
    with pytest.raises(MarginlabError, match="no parameters"):
        homogeneity.check(nn.ReLU(), torch.randn(4, 3))
    zero = nn.Linear(3, 2, bias=False)
    nn.init.zeros_(zero.weight)
    with pytest.raises(MarginlabError, match="all zero"):
        homogeneity.check(zero, torch.randn(4, 3))


def test_default_groups_and_cached_check():
    model = models.mlp(10, [8], 3, bias="first")
    assert homogeneity.default_groups(model) == {"fc1": ("fc1.weight", "fc1.bias"),
                                                 "fc2": ("fc2.weight",)}
    x = torch.randn(4, 10)
    first = homogeneity.cached_check(model, x)
    assert homogeneity.cached_check(model, x) is first
    regrouped = homogeneity.cached_check(model, x, {"all": ["fc1.weight", "fc1.bias",
                                                            "fc2.weight"]})
    assert regrouped is not first and regrouped.layer_orders == {"all": 2.0}
