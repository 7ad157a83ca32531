"""What several history tests share."""

from __future__ import annotations

# Episode rules that fire on single_face.mp4 (a man going from neutral to smiling), and
# the room mood once a second.
EPISODE_RULES = """\
episodes:
  rules:
    - name: low
      when: {valence_below: 0.3}
      for_s: 0.5
      clear_after_s: 0.3
    - name: high
      when: {arousal_above: -0.5}
      for_s: 0.3
      clear_after_s: 0.2
  max_variance: 0.5
mood:
  enabled: true
  interval_s: 1
"""
