"""Offline generators that write datasets in their official release layouts (SPEC.md §G)."""
