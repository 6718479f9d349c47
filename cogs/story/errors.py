"""What a story command raises when it cannot be done; platforms show the message to the person who asked."""

from __future__ import annotations


class StoryError(Exception):
    """A command that cannot be done; the message is for the person who asked."""


class NoStory(StoryError):
    pass


class StoryRunning(StoryError):
    pass


class NotAllowed(StoryError):
    pass


class BadVote(StoryError):
    pass


class VoteClosed(StoryError):
    pass


class NarratorBusy(StoryError):
    pass
