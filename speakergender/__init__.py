"""speakergender: tell a speaker's gender from a recording."""

__version__ = "0.1.0"
