"""repmatch."""
