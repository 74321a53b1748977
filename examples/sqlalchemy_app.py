"""pgqueue with SQLAlchemy: jobs join the session's transaction.

Run: DATABASE_URL=postgresql+psycopg://postgres@localhost/shop python examples/sqlalchemy_app.py
"""

import os

from sqlalchemy import String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgqueue

URL = os.environ["DATABASE_URL"]  # the psycopg (3) driver: postgresql+psycopg://
engine = create_engine(URL)
queue = pgqueue.PgQueue(URL)


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="new")


@queue.task
def ship(order_id: int) -> None:
    with Session(engine) as session, session.begin():
        session.get_one(Order, order_id).status = "shipped"


def place_order(session: Session) -> Order:
    order = Order()
    session.add(order)
    session.flush()  # the order gets its id
    ship.enqueue(session, order.id)  # same transaction as the INSERT above
    return order


def main() -> None:
    pgqueue.migrate(queue.dsn)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        place_order(session)  # committed: the order and its job
    with Session(engine) as session:
        place_order(session)
        session.rollback()  # rolled back: neither the order nor its job
    queue.run_worker(burst=True)  # run what is queued, then exit
    with Session(engine) as session:
        shipped = session.scalar(select(func.count()).where(Order.status == "shipped"))
        print(f"orders: {session.scalar(select(func.count(Order.id)))}, shipped: {shipped}")
    engine.dispose()


if __name__ == "__main__":
    main()
