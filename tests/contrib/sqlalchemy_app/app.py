"""A small SQLAlchemy application: orders, and a pgqueue task that ships them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgqueue

queue = pgqueue.PgQueue()
engine: dict[str, Engine] = {}  # the application's engine, set up by configure()


def configure(db_engine: Engine) -> None:
    """Use ``db_engine`` for the app (and create its tables)."""
    engine["main"] = db_engine
    Base.metadata.create_all(db_engine)


class Base(DeclarativeBase):
    """Declarative base of the app's models."""


class Order(Base):
    """A shop order."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="new")


@queue.task
def ship(order_id: int) -> str:
    """Mark an order shipped, in a session of its own."""
    with Session(engine["main"]) as session, session.begin():
        order = session.get(Order, order_id)
        assert order is not None
        order.status = "shipped"
    return "shipped"


def place_order(session: Session, **fields: Any) -> Order:
    """Insert an order and enqueue its shipping in the session's transaction."""
    order = Order(**fields)
    session.add(order)
    session.flush()
    ship.enqueue(session, order.id)
    return order
