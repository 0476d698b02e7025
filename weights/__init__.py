"""The shipped, trained meta network (see MODEL_CARD.md)."""
