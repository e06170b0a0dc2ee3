"""Screens over the live view: help and GPU details."""
