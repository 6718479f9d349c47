"""Privacy: training consent, forget, export and log retention."""
