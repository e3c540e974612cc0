"""The outlook tests share the recompute tests' database session fixture."""

from tests.recompute.conftest import session  # noqa: F401
