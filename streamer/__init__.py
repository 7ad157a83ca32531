"""Real-time facial-affect stream analyzer.

Faces in video are reduced to valence and arousal (each in [-1, 1]); a text-only LLM
turns those numbers into emotion categories and a description. Only numbers and text
leave the process.
"""

__version__ = "0.1.0"
