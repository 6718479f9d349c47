"""Interactive story games: the character narrates, the audience votes (see service.py)."""
