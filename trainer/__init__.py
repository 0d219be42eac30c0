"""Offline learning: data, feature pipelines, honest evaluation, signed model publication."""
