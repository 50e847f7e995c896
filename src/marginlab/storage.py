"""The former path of :mod:`marginlab.io.storage`, kept so that existing imports work: it is
the same module object (attributes, monkeypatching and all)."""

import sys

from marginlab.io import storage as _module

sys.modules[__name__] = _module
