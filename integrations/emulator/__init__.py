"""A local Stripe emulator: a generated account served over HTTP with Stripe's semantics.

Used by the demo, the tests and the benchmarks (the real ``stripe`` SDK pointed at
:attr:`EmulatorServer.url` through ``base_addresses={"api": url}``)::

    account = generate_account(seed=1, customers=50, months=12)
    with EmulatorServer(account) as server:
        client = stripe.StripeClient("sk_test_emulator", base_addresses={"api": server.url})
        for sub in client.v1.subscriptions.list({"status": "all"}).auto_paging_iter(): ...
"""

from integrations.emulator import shapes
from integrations.emulator.generator import (
    EVENT_WINDOW,
    EmulatedAccount,
    add_months,
    amount_for,
    generate_account,
    generate_in_batches,
)
from integrations.emulator.server import (
    EmulatorServer,
    LoggedRequest,
    StripeError,
    endpoint_of,
    signature_header,
)
from integrations.emulator.shapes import API_VERSION, public_view

__all__ = [
    "API_VERSION",
    "EVENT_WINDOW",
    "EmulatedAccount",
    "EmulatorServer",
    "LoggedRequest",
    "StripeError",
    "add_months",
    "amount_for",
    "endpoint_of",
    "generate_account",
    "generate_in_batches",
    "public_view",
    "shapes",
    "signature_header",
]
