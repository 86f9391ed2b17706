"""Methods: the catalog of every method, scikit-learn baselines, torch training, fusion and SSL.

Importing this package imports nothing else; :mod:`.catalog` (read by the Snakefile) needs
neither torch, Lightning nor scikit-learn.
"""
