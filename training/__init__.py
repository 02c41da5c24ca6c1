"""Command line, training, evaluation and export."""
