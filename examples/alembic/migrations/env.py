"""alembic environment of the application; pgqueue's schema is kept out of autogenerate."""

import os

from alembic import context
from models import Base
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from pgqueue.contrib.alembic import include_name, include_object

engine = create_engine(os.environ["DATABASE_URL"], poolclass=NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_schemas=True,  # see every schema...
        include_name=include_name,  # ...except pgqueue's, which pgqueue's SQL manages
        include_object=include_object,  # and models of its tables (models.Job) are not ours
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
