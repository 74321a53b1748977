"""The admin, and the test shop's views (they need a tasks framework: see shop.tasks)."""

import importlib.util

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]

if importlib.util.find_spec("django.tasks") or importlib.util.find_spec("django_tasks"):
    from tests.contrib.django_project.shop import views

    urlpatterns += [
        path("shop/order/", views.place_order),
        path("shop/add-later/", views.add_later),
    ]
