"""Training, evaluation and export of the reference model."""
