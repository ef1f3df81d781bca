"""RQ job functions: thin; each reloads its rows by id and calls dsr.domain."""
