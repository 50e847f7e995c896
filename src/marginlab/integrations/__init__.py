"""Bridges to other training frameworks (optional extras): ``lightning``."""
