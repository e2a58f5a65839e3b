"""Storage: the only package that knows SQL. Query modules take an open connection so the
layers above can put several of them in one transaction."""
