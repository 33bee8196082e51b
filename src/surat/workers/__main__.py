"""`python -m surat.workers`: one worker process, started by the supervisor (surat.workers.child)."""

import sys

from surat.workers.child import main

sys.exit(main())
