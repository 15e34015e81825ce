"""The reporter side: submission, case codes, the reporter's inbox."""
