"""The application's own tables, and a read-only model of pgqueue's jobs."""

from sqlalchemy import BigInteger, Integer, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    metadata = MetaData()


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20))


class Job(Base):
    """pgqueue's jobs (a view pgqueue's SQL manages), to show an order's next to it: read it,
    never write it. env.py's include_object keeps autogenerate from proposing to create it."""

    __tablename__ = "jobs"
    __table_args__ = {"schema": "pgqueue"}
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text)
