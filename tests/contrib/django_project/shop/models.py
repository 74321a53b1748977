"""An order: the business data a job must commit (or roll back) with."""

from django.db import models


class Order(models.Model):
    """A shop order."""

    email = models.CharField(max_length=200)
    receipt_sent = models.BooleanField(default=False)

    class Meta:
        app_label = "shop"
