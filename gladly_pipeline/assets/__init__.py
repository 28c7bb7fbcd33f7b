"""Dagster assets: raw extractions and the analysis-ready tables built from them."""
