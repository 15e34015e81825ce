"""The handler side: cases, keys, entries, lifecycle."""
