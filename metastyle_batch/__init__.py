"""metastyle-batch: arbitrary style transfer with meta networks (Shen, Yan, Zeng 2017)."""

__version__ = "0.1.0"
