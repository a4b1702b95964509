"""Real text, prepared once in the launching process: documents, tokenizer, packed token files. No torch."""
