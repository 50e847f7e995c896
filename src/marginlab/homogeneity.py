"""The former path of :mod:`marginlab.core.homogeneity`, kept so that existing imports work: it is
the same module object (attributes, monkeypatching and all)."""

import sys

from marginlab.core import homogeneity as _module

sys.modules[__name__] = _module
