"""The dispatcher API: ``geostream api``, dispatcher tokens and the ``api`` benchmark.

Dispatchers read their own organisation's couriers (latest positions, tracks, trips, stops,
zones and a live stream). The API reads PostgreSQL only as the restricted role
``geostream_api`` and names the org per transaction, so row-level security, not the API's own
filters, is what keeps organisations apart (see ``sinks/isolation.py``).
"""
