"""The network edges: Stripe client, sync, webhook app, mirror store, emulator, Slack."""
