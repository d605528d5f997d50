"""The engine imports and measures memory where Unix-only modules such as ``resource`` are missing (Windows)."""
from __future__ import annotations

import subprocess
import sys

from helpers import REPO

# psutil's Linux backend imports ``resource`` itself (its Windows backend does not), so it is
# imported before the Unix-only modules are made unimportable; the engine's own imports follow.
PROBE = """
import sys, importlib, pkgutil
import psutil
for name in ("resource", "fcntl", "pwd", "grp", "termios"):
    sys.modules[name] = None             # 'import name' now raises ImportError, as on Windows
import SAMRegistrationLib.worker, SAMRegistrationLib.cli
from SAMRegistrationLib import pipeline
import SAMRegistrationLib
for module in pkgutil.walk_packages(SAMRegistrationLib.__path__, "SAMRegistrationLib."):
    importlib.import_module(module.name)
def no_proc(*args, **kwargs):
    raise OSError("no /proc")
pipeline.open = no_proc                  # no /proc/self/status either: take the fallback path
print(pipeline.peak_rss_mb())
"""


def test_engine_imports_and_peak_rss_without_unix_modules():
    probe = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert float(probe.stdout.split()[-1]) > 0
