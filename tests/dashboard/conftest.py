"""The dashboard tests run the CLI like the report tests (same fixture)."""

from tests.report.conftest import run_cli  # noqa: F401 - a fixture, used by name
