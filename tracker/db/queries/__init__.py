"""Every SQL statement the daemon runs, one module per concern (migrations, views and SQL
functions live in sql/). Code reads them as `from tracker.db import queries as q; q.NAME`."""

from tracker.db.queries.reducer import *  # noqa: F401,F403
from tracker.db.queries.intake import *  # noqa: F401,F403
from tracker.db.queries.polling import *  # noqa: F401,F403
from tracker.db.queries.postbacks import *  # noqa: F401,F403
from tracker.db.queries.sinks import *  # noqa: F401,F403
from tracker.db.queries.status import *  # noqa: F401,F403
from tracker.db.queries.upkeep import *  # noqa: F401,F403
