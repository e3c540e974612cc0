"""The background worker: Celery app, thin tasks, beat schedule, locks, event dispatch."""
