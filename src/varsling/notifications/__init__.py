"""Notifications to staff by email: an outbox written with the action, delivered by the jobs."""
