"""Shared settings for the property-based fuzz tests (hypothesis).

Every fuzz test is marked ``fuzz`` and decorated with ``fuzz_settings()``:

- ``make test`` runs each with a short budget (``QUICK_EXAMPLES`` inputs), so the suite stays fast;
- ``make fuzz`` sets ``SURAT_FUZZ=1`` and runs the fuzz tests again and again, with fresh random seeds,
  for ``FUZZ_SECONDS`` (default 600) per target.

Inputs that fail are kept in ``tests/fuzz_regressions/`` (hypothesis's example database) and replayed
first by every later run, ``make test`` included: commit that folder's new entries with the fix.

``PER_INPUT_DEADLINE`` is the time bound per input: a parser that needs longer for one input fails the
test, which is how super-linear behaviour on hostile input shows up.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["FUZZING", "PER_INPUT_DEADLINE", "QUICK_EXAMPLES", "fuzz_settings"]

FUZZING = os.environ.get("SURAT_FUZZ") == "1"
QUICK_EXAMPLES = 150
LONG_EXAMPLES = 20_000  # one round of `make fuzz`; the Makefile repeats rounds until its time is up
PER_INPUT_DEADLINE = timedelta(milliseconds=500)
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


def fuzz_settings(**overrides: Any) -> settings:
    """Settings for one fuzz test; ``overrides`` for a target that needs fewer inputs or more time."""
    options: dict[str, Any] = {
        "max_examples": LONG_EXAMPLES if FUZZING else QUICK_EXAMPLES,
        "deadline": PER_INPUT_DEADLINE,
        "database": DirectoryBasedExampleDatabase(str(REGRESSIONS)),
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        "derandomize": False,
    }
    options.update(overrides)
    return settings(**options)
