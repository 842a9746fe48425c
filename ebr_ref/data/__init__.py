"""Package data: the small trained models shipped with ebr_ref (canonical .npz + .json pairs)."""
