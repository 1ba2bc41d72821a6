"""Seed-layout ingestion, cleaning, splitting and the demo data generator (`fbmr data ...`)."""
