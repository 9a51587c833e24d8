"""File names an imported workdir holds beside config.json and checkpoints/ (shared with the loader,
which must not import the converter's dependencies)."""

HF_FILES = "hf_files"             # tokenizer and remote-code files copied from the HF folder
IMPORT_RECORD = "hf_import.json"  # source family, its config.json, what was copied
