"""The decoder graph's input and output names: the contract between `assistant.convert`,
which writes the graph, and the runtime that feeds it (full layout: assistant/convert/graph.py)."""

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
LOGITS = "logits"
LOGITS_TO_KEEP = "logits_to_keep"  # logits for the last N positions only (0: all)
