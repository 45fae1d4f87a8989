"""The staff pages: the review queue, one decision, and the insights (server-rendered, Swedish)."""
