"""The statement engine: the life of a statement, from the gate to normalized rows."""
