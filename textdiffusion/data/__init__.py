"""Data: the built-in story corpus, documents from files and the hub, and tokenizers."""
