"""Discord: the client (`client.py`), safe senders (`send.py`), rights (`rights.py`) and the runner (`platform.py`)."""
