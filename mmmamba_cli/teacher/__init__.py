"""Training the embedded default teacher: a tiny HoVLE-architecture model on easy-vqa."""
