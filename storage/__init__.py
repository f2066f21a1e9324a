"""The domain and its persistence: models, the tuple contract, filters, catalog, blocks, objects.

Importing the models, the contract and the filters imports no database driver, no FastAPI and
no Arq: the client depends on them. Backends are imported only when a URL selects them.
"""
