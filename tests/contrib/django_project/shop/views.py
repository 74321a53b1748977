"""Views of the test shop, enqueueing django.tasks tasks from a request."""

from django.http import HttpRequest, HttpResponse

from tests.contrib.django_project.shop import tasks
from tests.contrib.django_project.shop.models import Order


def place_order(request: HttpRequest) -> HttpResponse:
    """An order and its task; ``?fail=1`` raises after both (a declined payment)."""
    order = Order.objects.create(email="view@example.com")
    tasks.mark_sent.enqueue(order.id)
    if request.GET.get("fail"):
        raise RuntimeError("payment declined")
    return HttpResponse(str(order.id))


async def add_later(request: HttpRequest) -> HttpResponse:
    """An async view enqueueing with aenqueue()."""
    result = await tasks.add.aenqueue(1, 2)
    return HttpResponse(result.id)
