"""The control plane raises its soft limit on open files: every instance holds some."""

from __future__ import annotations

import subprocess
import sys


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    # in a child process: the test run's own limit stays as it is
    code = (
        "import resource\n"
        "from cattery.control.main import MAX_OPEN_FILES, raise_open_files_limit\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "raised = raise_open_files_limit()\n"
        "wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else hard\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE) == (raised, hard)\n"
        "assert raised == wanted, (raised, wanted)\n"
        "assert raise_open_files_limit() == raised  # idempotent\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
