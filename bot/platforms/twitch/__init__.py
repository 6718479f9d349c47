"""The Twitch platform: twitchio's `commands.Bot` over the shared runtime, EventSub chat and paced replies."""
