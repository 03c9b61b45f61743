"""The distractor lab: a small family trained on text with a planted distractor task."""
