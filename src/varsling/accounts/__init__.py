"""Users, roles, units, login and sessions."""
