"""The whole method as one pipeline: seed -> distill 1, 2, 3 -> hybrid + stage 3 -> eval -> bench."""
