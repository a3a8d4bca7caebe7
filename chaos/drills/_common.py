"""Makes chaos/ importable from a drill script, under the lab's Python (with psycopg)."""
import os
import subprocess
import sys

CHAOS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, CHAOS)
try:
    import psycopg  # noqa: F401
except ImportError:
    python = subprocess.run([os.path.join(CHAOS, "venv.sh")], check=True, capture_output=True,
                            text=True).stdout.strip()
    os.execv(python, [python] + sys.argv)
