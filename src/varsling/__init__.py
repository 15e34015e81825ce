"""Varsling: a confidential, end-to-end encrypted whistleblowing service."""
