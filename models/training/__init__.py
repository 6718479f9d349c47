"""LoRA fine-tuning of the character on its own conversations.

``data`` encodes chat examples with a loss mask, ``trainer`` holds the loop and the checks, ``worker`` is the
training process (``python -m models.training.worker JOB.json``), ``job`` runs and watches that process from the
bot, and ``gate`` decides whether a trained adapter may replace the serving one.
"""
