"""marginlab: measure, verify and accelerate margin maximization in homogeneous networks.

``import marginlab as ml`` exposes the nouns a user needs; the subpackages hold the rest
(docs/DESIGN.md, Architecture): ``ml.measure`` / ``ml.MarginStats`` (margins of a model on
data), ``ml.homogeneity.check``, ``ml.data.load``, ``ml.models``, ``ml.fit`` (training, see
:mod:`marginlab.train` for the schedules) and the errors every bad input raises.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("marginlab")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+local"

from marginlab import data, models
from marginlab.core import homogeneity, losses, margins
from marginlab.core.homogeneity import HomogeneityReport
from marginlab.core.margins import MarginStats, measure, per_sample
from marginlab.errors import MarginlabError, NotHomogeneousError, NotSeparatedError
from marginlab.tracker import Tracker
from marginlab.train.fit import fit

__all__ = [
    "HomogeneityReport",
    "MarginStats",
    "MarginlabError",
    "NotHomogeneousError",
    "NotSeparatedError",
    "Tracker",
    "__version__",
    "data",
    "fit",
    "homogeneity",
    "losses",
    "margins",
    "measure",
    "models",
    "per_sample",
]

