"""Lightning modules for the paper's four tasks, on one fine-tuning base (``base.FineTuneModule``)."""
