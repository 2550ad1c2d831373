"""`exchange bench NAME`: one module per benchmark, all printing through :mod:`.format`."""
