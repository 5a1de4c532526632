"""The Faust worker: the composition root (`app.py`) and thin agents around the pure logic."""
