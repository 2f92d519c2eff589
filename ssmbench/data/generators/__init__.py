"""Offline generators that write datasets in their official release layouts (docs/methods.md §G)."""
