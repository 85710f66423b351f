"""cnn-lab core: datasets, CNN variants, training, LR range test, evaluation and inspection (no Prefect)."""

__version__ = "0.1.0"
