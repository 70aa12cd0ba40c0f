"""Reconcile: broker reports vs our books, repairs, and the broker query gateway."""
