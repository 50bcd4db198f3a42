"""The statement engine: the life of a statement, written once for every route."""
