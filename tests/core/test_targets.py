"""Labels and margins q_n (marginlab.core.targets) against a plain-Python reference."""

import numpy as np
import pytest
import torch

from marginlab.core import targets
from marginlab.errors import MarginlabError


def _reference_margins(out: np.ndarray, y: np.ndarray) -> np.ndarray:
    q = []
    for row, label in zip(out, y, strict=True):
        if row.size == 1:
            sign = 1.0 if label > 0 else -1.0
            q.append(sign * row[0])
        else:
            q.append(row[label] - max(v for j, v in enumerate(row) if j != label))
    return np.array(q)


@pytest.mark.parametrize("coding", [(-1, 1), (0, 1)])
def test_binary_margins_match_reference(coding):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(50, 1, generator=gen)
    y = torch.tensor(coding)[torch.randint(0, 2, (50,), generator=gen)]
    q = targets.margins(out, targets.targets(y, 1))
    assert q.dtype == torch.float64
    np.testing.assert_allclose(q.numpy(), _reference_margins(out.double().numpy(), y.numpy()),
                               rtol=0, atol=1e-15)
    # the same margin, read as the two-logit model [−Φ/2, Φ/2] with class indices
    two = torch.cat([-0.5 * out, 0.5 * out], 1)
    np.testing.assert_allclose(targets.margins(two, targets.class_indices(y, 1)).numpy(),
                               q.numpy(), atol=1e-7)


def test_multiclass_margins_and_rivals_match_reference():
    gen = torch.Generator().manual_seed(1)
    out = torch.randn(40, 5, generator=gen)
    y = torch.randint(0, 5, (40,), generator=gen)
    t = targets.targets(y, 5)
    np.testing.assert_allclose(targets.margins(out, t).numpy(),
                               _reference_margins(out.double().numpy(), y.numpy()), atol=1e-15)
    rival = targets.rivals(out, t)
    masked = out.double().numpy().copy()
    masked[np.arange(40), y.numpy()] = -np.inf
    np.testing.assert_array_equal(rival.numpy(), masked.argmax(1))
    ties = torch.tensor([[1.0, 2.0, 2.0]])  # tie between classes 1 and 2: the first wins
    assert targets.rivals(ties, torch.tensor([0])).item() == 1


@pytest.mark.parametrize("y,n_out,match", [
    (torch.tensor([0, 2, 1]), 1, "one output needs labels"),
    (torch.tensor([0, 3, 1]), 3, r"labels must be in \[0, 2\]"),
    (torch.tensor([0, -1, 1]), 3, r"labels must be in \[0, 2\]"),
    (torch.tensor([0.5, 1.0]), 3, "labels must be integers"),
    (torch.zeros(2, 2, dtype=torch.long), 3, "1-D"),
])
def test_bad_labels_are_one_line_errors(y, n_out, match):
    with pytest.raises(MarginlabError, match=match) as info:
        targets.targets(y, n_out)
    assert "\n" not in str(info.value)
