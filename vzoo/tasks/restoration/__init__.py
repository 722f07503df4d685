"""restoration task for mmengine (see issue 3)."""
