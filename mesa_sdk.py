"""Alias of `mesa`'s public API, so code written for the spec's ``mesa_sdk`` runs unchanged."""

from __future__ import annotations

from mesa import *  # noqa: F403
from mesa import __all__ as __all__
