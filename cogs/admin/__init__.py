"""Admin: the character's model lifecycle (retrain, status, rollback)."""
