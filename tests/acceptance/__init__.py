"""Acceptance suite (see conftest.py): every CLI verb and API function driven as a user does."""
