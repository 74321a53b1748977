"""Integrations with other libraries. Each module imports its library; the core imports none."""
