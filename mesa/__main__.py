"""``python -m mesa`` runs the CLI."""

from __future__ import annotations

import sys

from mesa.cli import main

sys.exit(main())
