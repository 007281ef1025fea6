"""The one client of the control API (placeholder: filled in below)."""
