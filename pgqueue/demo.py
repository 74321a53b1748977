"""The app of ``pgqueue demo``, for serving its queues with a worker of your own.

    pgqueue --app pgqueue.demo:app worker --queues pgqueue_demo.io:20,pgqueue_demo.cpu:4

The Compose example (``examples/docker/compose.yaml``) runs this beside ``pgqueue demo``.
"""

from __future__ import annotations

from pgqueue._demo._tasks import QUEUES, app, render_invoice, send_receipt

__all__ = ["QUEUES", "app", "render_invoice", "send_receipt"]
