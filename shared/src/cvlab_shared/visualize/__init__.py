"""Pictures people would rather look at than read (PNG via matplotlib's Agg backend, no display needed)."""
