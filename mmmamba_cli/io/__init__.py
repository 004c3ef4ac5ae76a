"""Reading and writing model directories and checkpoints."""
