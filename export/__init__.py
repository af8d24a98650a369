"""SavedModel export of zoo encoders (embedding and hashing signatures for TF Serving).

    from export import export_encoder
    path = export_encoder(encoder, "models/", version=1)   # models/<encoder.name>/1/

See export/saved_model.py for the signatures and ../shared/specs/serving.md for the contract.
"""

from export.saved_model import export_encoder

__all__ = ["export_encoder"]
