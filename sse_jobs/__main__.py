"""``python -m sse_jobs``, the same as the ``sse-jobs`` command."""

import sys

from sse_jobs.cli import main

sys.exit(main())
