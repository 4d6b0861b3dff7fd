"""sealpool: task management for Filecoin sector sealing, on Celery and Redis."""

__version__ = "0.1.0"
