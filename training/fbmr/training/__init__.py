"""fbmr.training: seed-data ingestion and cleaning, demo data, and model training."""
