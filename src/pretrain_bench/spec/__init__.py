"""What things are: GPU catalogue, model registry and FLOPs, step statistics and MFU, and the torch-free builders
of DeepSpeed and TrainingArguments dictionaries. The lowest layer: it imports nothing above it, and never torch."""
