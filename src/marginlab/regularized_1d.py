"""The former path of :mod:`marginlab.twolayer.onedim`, kept so that existing imports work: it
is the same module object."""

import sys

from marginlab.twolayer import onedim as _module

sys.modules[__name__] = _module
