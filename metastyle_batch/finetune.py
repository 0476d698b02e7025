"""Old import path: fine-tuning lives in :mod:`metastyle_batch.train.finetune`."""

from .train.finetune import FinetuneResult, NetError, finetune, load_net, read_net_info, save_net, training_config

__all__ = ["FinetuneResult", "NetError", "finetune", "load_net", "read_net_info", "save_net", "training_config"]
