"""One module per stage: thin Prefect tasks that read storage, call ltx2core, write storage."""
