"""Pipeline backends: the systems a trigger starts."""
