"""Optional simulators in tests: skipped where their extra is missing, a failure in CI (SB3_RPO_REQUIRE_EXTRAS=1)."""

import importlib
import os
from types import ModuleType

import pytest


def require_extra(module: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f'{module} is missing ({error}); pip install "sb3-rpo[{extra}]"'
        if os.environ.get("SB3_RPO_REQUIRE_EXTRAS") == "1":
            pytest.fail(message)
        pytest.skip(message, allow_module_level=True)
