"""SavedModel export of zoo encoders (embedding and hashing signatures): see the export issue."""
