"""Serving trained skill models behind the OpenAI chat API (``python -m svp.serve``)."""
