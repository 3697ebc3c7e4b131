"""Orchestration: watch caches, one scheduler (a heap of next-decision times), and the
single-flight refresh path claim → exchange → persist → validate → record."""
