"""Tasks of the shop app; pgqueue imports every installed app's tasks.py at start-up."""

from pgqueue.contrib.django import app
from shop.models import Order

try:
    from django.tasks import task  # Django >= 6.0
except ImportError:
    from django_tasks import task  # Django 5.2 with the django-tasks backport


@app.task  # a pgqueue task: enqueue it on Django's connection
def send_receipt(order_id: int) -> str:
    order = Order.objects.get(id=order_id)
    order.receipt_sent = True
    order.save(update_fields=["receipt_sent"])
    return order.email


@task(queue_name="emails", priority=10)  # a django.tasks task, run by pgqueue's workers
def make_invoice(order_id: int) -> int:
    Order.objects.filter(id=order_id).update(invoiced=True)
    return order_id
