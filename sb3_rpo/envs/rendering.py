"""Rendering helpers: reuse gymnasium's classic-control renderers where a task matches one."""

from __future__ import annotations

import importlib
from typing import Any


def gym_renderer(owner: Any, entry_point: str) -> Any:
    """A gymnasium env of class ``entry_point`` in ``rgb_array`` mode, created once per ``owner``, used only to draw."""
    renderer = getattr(owner, "_gym_renderer", None)
    if renderer is None:
        try:
            import pygame  # noqa: F401
        except ImportError as e:
            raise ImportError("Rendering needs pygame: pip install 'sb3-rpo[render]'") from e
        module, name = entry_point.split(":")
        renderer = getattr(importlib.import_module(module), name)(render_mode="rgb_array")
        owner._gym_renderer = renderer
    return renderer
