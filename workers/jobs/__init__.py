"""Job functions, one module per job kind; each is named like the kind in the catalog."""
