"""Alerting: which results match an alert rule, when a window fires, and delivery to a channel."""
