"""Face geometry: detect -> align -> region mask -> paste back (the face frame)."""
