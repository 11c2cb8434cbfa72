"""Task data: the local JSONL layout, injection into mteb tasks, de-duplication, Hub, mirrors."""
