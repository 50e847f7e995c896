"""The former path of :mod:`marginlab.core.margins`, kept so that existing imports work: it is
the same module object (attributes, monkeypatching and all)."""

import sys

from marginlab.core import margins as _module

sys.modules[__name__] = _module
