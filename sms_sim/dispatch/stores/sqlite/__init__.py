"""The SQLite store: the embedded default. ``store`` is the ``DispatchStore``, ``schema`` its
versioned tables and upgrades, ``rows`` the row-to-value conversions."""

__all__: list[str] = []
