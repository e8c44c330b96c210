"""Data, training engine, evaluation and visualisation for the detection course."""
