"""Placing an order: the order and its jobs commit together, or not at all."""

from django.db import transaction

from pgqueue.contrib.django import connection
from shop.models import Order
from shop.tasks import make_invoice, send_receipt


def place_order(email: str, fail: bool = False) -> Order:
    with transaction.atomic():
        order = Order.objects.create(email=email)
        send_receipt.enqueue(connection(), order.id)  # pgqueue task, on Django's connection
        make_invoice.enqueue(order.id)  # django.tasks task, through PgQueueBackend
        if fail:
            raise RuntimeError("payment declined")  # rolls back the order and both jobs
    return order
