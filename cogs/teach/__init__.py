"""Teach: moderators give the reply the character should have given, kept with its context for the next tune."""
