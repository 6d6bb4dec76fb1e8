"""Wires workflows, activities and clients into Temporal workers (`python -m worker`)."""
