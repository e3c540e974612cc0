"""``nrr dashboard``: the retention report served read-only, with drill-down to customers.

* :mod:`~nrr.dashboard.queries`: the customers behind a movement, a segment or a cohort
  cell, one SQL aggregation each (indexed by month);
* :mod:`~nrr.dashboard.app`: the HTTP server (standard library), authentication, routes,
  CSV and JSON of every table; pages rendered by the report's own Jinja2 templates.
"""
