"""A workspace on disk: run folders, their files, ownership, the run record, provenance."""
