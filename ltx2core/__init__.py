"""LTX-2 LoRA training library: models, media, data and training.

Pure library: imports neither Prefect nor Lance, so it runs on a bare GPU box.
"""
