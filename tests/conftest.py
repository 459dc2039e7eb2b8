import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import torch  # noqa: E402

# One intra-op thread: the test models are tiny, and on a busy 2-core machine spinning OpenMP
# threads made their steps 10-40x slower than a single thread.
torch.set_num_threads(1)
