"""The former path of :mod:`marginlab.io.plots`, kept so that existing imports work: it is
the same module object (attributes, monkeypatching and all)."""

import sys

from marginlab.io import plots as _module

sys.modules[__name__] = _module
