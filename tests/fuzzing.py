"""Shared settings for the property-based fuzz tests (hypothesis).

Every fuzz test is marked ``fuzz`` and decorated with ``fuzz_settings()``:

- ``make test`` runs each with a short budget (``QUICK_EXAMPLES`` inputs), so the suite stays fast;
- ``make fuzz`` sets ``SURAT_FUZZ=1`` and runs the fuzz tests again and again, with fresh random seeds,
  for ``FUZZ_SECONDS`` (default 600) per target.

Inputs that fail are kept in ``tests/fuzz_regressions/`` (hypothesis's example database) and replayed
first by every later run, ``make test`` included: commit that folder's new entries with the fix.

``PER_INPUT_DEADLINE`` is the time bound per input: a parser that needs longer for one input fails the
test, which is how super-linear behaviour on hostile input shows up. It is counted in CPU time of the
process (``tests/unit/conftest.py`` wraps every fuzz test's inner function), not in wall time as
hypothesis's own deadline would: on a loaded 2-core machine a niced `make fuzz` was descheduled for two
seconds in the middle of a 70 ms input, and hypothesis reported a flaky deadline failure that said
nothing about the code.
"""

from __future__ import annotations

import functools
import gc
import os
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = [
    "FUZZING",
    "PER_INPUT_DEADLINE",
    "QUICK_EXAMPLES",
    "InputTooSlow",
    "bound_cpu_per_input",
    "fuzz_settings",
]

FUZZING = os.environ.get("SURAT_FUZZ") == "1"
QUICK_EXAMPLES = 150
LONG_EXAMPLES = 20_000  # one round of `make fuzz`; the Makefile repeats rounds until its time is up
PER_INPUT_DEADLINE = timedelta(milliseconds=500)
REGRESSIONS = Path(__file__).resolve().parent / "fuzz_regressions"


def fuzz_settings(**overrides: Any) -> settings:
    """Settings for one fuzz test; ``overrides`` for a target that needs fewer inputs or more time."""
    options: dict[str, Any] = {
        "max_examples": LONG_EXAMPLES if FUZZING else QUICK_EXAMPLES,
        "deadline": None,  # the bound is PER_INPUT_DEADLINE of CPU time, see bound_cpu_per_input
        "database": DirectoryBasedExampleDatabase(str(REGRESSIONS)),
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
        "derandomize": False,
    }
    options.update(overrides)
    return settings(**options)


class InputTooSlow(AssertionError):
    """One input took more than PER_INPUT_DEADLINE of CPU time: hypothesis shrinks and keeps it."""


def bound_cpu_per_input(inner: Callable[..., object]) -> Callable[..., object]:
    """Wrap a hypothesis test's inner function (``test.hypothesis.inner_test``, the hook hypothesis
    offers test runners) so that each input is bounded by PER_INPUT_DEADLINE of process CPU time."""
    limit = PER_INPUT_DEADLINE.total_seconds()

    @functools.wraps(inner)
    def bounded(*args: object, **kwargs: object) -> object:
        # The cyclic garbage collector runs between inputs, not inside one: a full collection of a
        # long fuzz run's heap cost 600 ms of CPU and landed on a 10 ms input.
        collecting = gc.isenabled()
        gc.disable()
        try:
            start = time.process_time()
            result = inner(*args, **kwargs)
            spent = time.process_time() - start
        finally:
            if collecting:
                gc.enable()
        if spent > limit:
            raise InputTooSlow(
                f"one input took {spent * 1000:.0f} ms of CPU time (bound {limit * 1000:.0f} ms)"
            )
        return result

    return bounded
