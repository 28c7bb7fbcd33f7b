"""Sensors: new export jobs and the intraday refresh turn into extraction runs."""
