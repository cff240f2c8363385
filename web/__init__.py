"""Sala: a live chat room for the browser."""
