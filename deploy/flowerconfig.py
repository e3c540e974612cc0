"""Flower's configuration (``--conf``): basic auth read from a secret file.

The ``user:password`` pair lives in ``/run/secrets/flower_basic_auth`` (a compose secret),
so it is on neither Flower's command line (visible in ``ps``) nor in its environment.
"""

from pathlib import Path

_CREDENTIALS = Path("/run/secrets/flower_basic_auth")

basic_auth = [line.strip() for line in _CREDENTIALS.read_text().splitlines() if line.strip()]
if not basic_auth:
    raise SystemExit(f"{_CREDENTIALS} is empty: write user:password into it")
