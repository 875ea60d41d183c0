"""Tests of the desired side (pure rules first)."""
