"""Weights from elsewhere: HF LLM checkpoints in and out (hf_import, hf_export), VQ tokenizer weights."""
